"""Sequence to sequence (kind ``seq2seq``; headline ``exact_match`` of greedy decoding on the test
split; also ``token_accuracy``, and the same on a longer-than-training ``long`` split where the task
has one): ``reverse``, ``sort``, ``addition``, ``dates`` (offline, default), generated
deterministically by ``tasks.language.seq2seq_data``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import (Batch, Budget, DecodedExamples, Generator, ItemLog, Option, Task, TaskReport, TensorBatches,
                    register_task)
from .seq2seq_data import make_splits, vocabulary

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<bos>", "<eos>"]


class Seq2SeqTask(DecodedExamples, Task):
    """Generated (source, target) string pairs as token tensors; greedy decoding is scored."""

    domain = "language"
    kind = "seq2seq"
    modality = "text"
    metric = "exact_match"
    report = TaskReport(metric_units={"exact_match": "exact-match rate"})
    target = 0.9  # validation exact match: time_to_target_s
    offline = default = True
    eval_splits = ("test", "long")
    options = {"label_smoothing": Option(0.0, minimum=0, below=1, help="label smoothing of the loss, e.g. 0.1 "
                                                                          "(the Transformer paper's)")}
    sizes: ClassVar[dict[str, int]] = {"n_train": 40_000, "n_val": 500, "n_test": 2_000, "n_long": 1_000}
    seed: ClassVar[int] = 0  # of the generator
    budget = Budget(steps=500, batch_size=128)
    default_seeds = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tensors: dict[str, tuple[Tensor, Tensor]] = {}

    def setup(self) -> None:
        if self.tensors:
            return
        self.tokens = SPECIALS + vocabulary(self.name)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pairs = make_splits(self.name, seed=self.seed, **self.sizes)
        self.max_src = max(len(s) for pairs in self.pairs.values() for s, _ in pairs)
        self.max_tgt = max(len(t) for pairs in self.pairs.values() for _, t in pairs)
        for split, pairs in self.pairs.items():
            if pairs:
                self.tensors[split] = self._encode(pairs)
        if not self.pairs.get("long"):
            self.eval_splits = ("test",)

    def data_fingerprint(self) -> dict[str, Any]:
        """The generator (``seq2seq_data``'s, by task name), its seed and split sizes."""
        return {"generator": f"seq2seq_data.{self.name}", "seed": self.seed, **self.sizes}

    def _encode(self, pairs: list[tuple[str, str]]) -> tuple[Tensor, Tensor]:
        src = torch.full((len(pairs), self.max_src), PAD, dtype=torch.long)
        tgt = torch.full((len(pairs), self.max_tgt + 2), PAD, dtype=torch.long)  # BOS target EOS
        for i, (s, t) in enumerate(pairs):
            src[i, :len(s)] = torch.tensor([self.index[c] for c in s])
            tgt[i, :len(t) + 2] = torch.tensor([BOS] + [self.index[c] for c in t] + [EOS])
        return src, tgt

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "src_vocab_size": len(self.tokens), "tgt_vocab_size": len(self.tokens),
                "max_src_len": self.max_src, "max_tgt_len": self.max_tgt + 1, "pad_id": PAD, "bos_id": BOS,
                "eos_id": EOS}

    def num_train_samples(self) -> int:
        return len(self.pairs["train"])

    on_host = (2,)  # the source padding: the LSTM encoder packs its rows by the lengths read from it
    requires = (Generator,)  # greedy or beam decoding for evaluation

    @staticmethod
    def _trim(batch: Batch) -> Batch:
        """(src, tgt) -> (src, tgt, src_pad): the columns that are padding in every row cut, and the
        source's padding mask (True at padding), made on the host and None where no row is padded."""
        src, tgt = batch
        src = src[:, :int((src != PAD).sum(1).max())]
        src_pad = src == PAD
        return src, tgt[:, :int((tgt != PAD).sum(1).max())], src_pad if bool(src_pad.any()) else None

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        return map(self._trim, TensorBatches(self.tensors["train"], batch_size, generator=generator))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        return map(self._trim, TensorBatches(self.tensors[split], batch_size))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        src, tgt, src_pad = batch
        logits = model(src, src_pad, tgt[:, :-1])  # teacher forcing
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD,
                               label_smoothing=self.opts["label_smoothing"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], items: ItemLog | None = None) -> dict[str, float]:
        sums, rows = 0, 0  # sums: (exact rows, tokens right, tokens) on the device, read at the end
        for src, tgt, src_pad in batches:
            gold = tgt[:, 1:]  # (B, L): target then EOS then PAD
            pred = model.generate(src, src_pad, max_len=gold.shape[1])
            pred = F.pad(pred, (0, gold.shape[1] - pred.shape[1]), value=PAD)[:, :gold.shape[1]]
            real = gold != PAD
            right = (pred == gold) & real
            exact_rows = right.sum(1) == real.sum(1)  # (B,)
            sums = sums + torch.stack([exact_rows.sum(), right.sum(), real.sum()])
            rows += len(src)
            if items is not None:  # per example: exact or not, and its tokens right out of its tokens
                items.add(exact_rows, tokens_right=right.sum(1), tokens=real.sum(1))
        exact, tokens_right, tokens = sums.tolist()
        return {"exact_match": exact / rows, "token_accuracy": tokens_right / tokens}

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.tokens[i])
        return "".join(out)

    def examples(self, model: nn.Module, device: torch.device, seed: int) -> dict[str, Any]:
        src, tgt = (t[:5].to(device) for t in self.tensors["test"])
        pred = model.generate(src, src == PAD, max_len=tgt.shape[1])
        return {"decoded": [{"source": self.decode(s.tolist()), "target": self.decode(t[1:].tolist()),
                             "output": self.decode(p.tolist())} for s, t, p in zip(src, tgt, pred)]}


def _seq2seq_task(task_name: str, text: str) -> type[Seq2SeqTask]:
    cls = type(task_name.capitalize(), (Seq2SeqTask,), {"name": task_name,
                                                       "report": replace(Seq2SeqTask.report, description=text),
                                                       "__module__": __name__})
    return register_task(cls)


Reverse = _seq2seq_task("reverse", "reverse a string of 5-20 letters; long split 21-25; offline")
Sort = _seq2seq_task("sort", "sort the letters of a string of 5-20; long split 21-25; offline")
Addition = _seq2seq_task("addition", "A+B -> the sum, 1-5 digit operands; long split 6-7 digits; offline")
Dates = _seq2seq_task("dates", "a date in one of many human formats -> ISO YYYY-MM-DD; offline")
