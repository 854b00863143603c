"""Character-level language modelling (kind ``language_modeling``; headline metric: ``loss`` in nats
per character on held-out text, lower is better; also ``bpc`` and ``perplexity``):

- ``pystdlib`` (offline, default): the running interpreter's own standard library sources (found
  through ``sysconfig``; tests and site-packages excluded), split by file: a file whose path hashes
  (CRC-32) to 0 mod 10 is validation. The corpus differs between Python versions; records keep its size.
- ``tinyshakespeare``: the 1,115,394-character corpus, first 90% train / last 10% validation,
  nanoGPT's split (its published val loss: 1.4697); from ``--data-dir``, ``--download`` fetches it.
- ``text_file``: your own text file (``--data-dir PATH/TO/FILE``), first 90% / last 10%.

Training draws random windows of ``block_size + 1`` characters (nanoGPT's ``get_batch``); evaluation
covers fixed, non-overlapping windows of the validation text.
"""

from __future__ import annotations

import platform
import sysconfig
import urllib.request
import zlib
from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import (Batch, Budget, DatasetError, DatasetNotFoundError, Generator, ItemLog, Option, Task, TaskReport,
                    files_fingerprint, register_task)

LN2 = float(np.log(2.0))


class CharLMTask(Task):
    """A text corpus as characters. Subclasses return (train text, validation text) from ``_texts``."""

    domain = "language"
    kind = "language_modeling"
    requires = (Generator,)  # the samples its examples show
    modality = "text"
    metric = "loss"
    higher_is_better = False
    report = TaskReport(metric_units={"bpc": "bits per character"})
    options = {"block_size": Option(128, minimum=1, help="characters of context (the model's block size)"),
               "eval_chars": Option(200_000, minimum=1, help="validation characters scored at the end (rounded up "
                                                             "to whole windows of block_size)")}
    budget = Budget(steps=600, batch_size=32)
    default_seeds = 1  # the whole default language run must fit 10 minutes of a 2-core CPU
    eval_interval: ClassVar[int] = 100  # steps between validations
    val_windows: ClassVar[int] = 64  # windows of block_size for the validation curve
    held = ("data",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data: dict[str, Tensor] = {}
        self.chars: list[str] = []

    @abstractmethod
    def _texts(self) -> tuple[str, str]:
        """The training text and the validation text."""

    def _source(self) -> str:
        """Where the text comes from, for error messages."""
        return f"the {self.name} corpus"

    def setup(self) -> None:
        if self.data:
            return
        train, val = self._texts()
        need = self.opts["block_size"] + 2
        if not train and not val:
            raise DatasetError(f"{self.name}: {self._source()} is empty")
        if len(val) < need or len(train) < need:
            raise DatasetError(f"{self.name}: {self._source()} is too short for block_size {need - 2}: its training "
                               f"part has {len(train)} characters and its validation part {len(val)}, each needs "
                               f"at least block_size + 2 = {need}")
        self.chars = sorted(set(train) | set(val))  # nanoGPT's character vocabulary
        codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        for split, text in (("train", train), ("val", val)):
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            self.data[split] = torch.from_numpy(np.searchsorted(codes, points).astype(np.int32))
        self.corpus = {"train_chars": len(train), "val_chars": len(val), "vocab_size": len(self.chars)}

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": len(self.chars), "block_size": self.opts["block_size"]}

    def num_train_samples(self) -> int:
        return len(self.data["train"]) - self.opts["block_size"]

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.eval_interval

    def encode(self, text: str) -> Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        return torch.tensor([index[c] for c in text if c in index], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def _windows(self, data: Tensor, starts: Tensor) -> Batch:
        span = starts[:, None] + torch.arange(self.opts["block_size"] + 1)  # (B, T+1)
        w = data[span.to(data.device, non_blocking=True)].long()  # no stream sync: a fresh host tensor
        return w[:, :-1], w[:, 1:]  # inputs, next characters

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        data = self.data["train"]
        for _ in range(self.eval_interval):
            yield self._windows(data, torch.randint(len(data) - self.opts["block_size"] - 1, (batch_size,),
                                                    generator=generator))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """'val': ``val_windows`` windows spread over the validation text (the curve); 'test': its
        first ``eval_chars`` characters, in consecutive windows (the headline)."""
        data, T = self.data["val"], self.opts["block_size"]
        last = len(data) - T - 1
        if split == "val":
            starts = torch.linspace(0, last, min(self.val_windows, last + 1)).long()
        else:
            starts = torch.arange(0, min(last, self.opts["eval_chars"]), T)
        for i in range(0, len(starts), batch_size):
            yield self._windows(data, starts[i:i + batch_size])

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], items: ItemLog | None = None) -> dict[str, float]:
        total, count = 0, 0  # total: float64 on the device, read once at the end
        for x, y in batches:
            logits = model(x).float()
            nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").double().sum(1)  # (B,) per window
            total = total + nll.sum()
            count += y.numel()
            if items is not None:  # per window: its summed loss over its tokens
                items.add(nll, weight=torch.full_like(nll, y.shape[1]))
        loss = float(total) / count
        return {"loss": loss, "bpc": loss / LN2, "perplexity": float(np.exp(loss))}

    def examples(self, model: nn.Module, device: torch.device, seed: int) -> dict[str, Any]:
        """A 300-character sample (temperature 0.8, top-k 20) continuing the start of the validation text."""
        prompt = self.data["val"][:64].long()[None].to(device)
        out = model.generate(prompt, 300, temperature=0.8, top_k=20,
                             generator=torch.Generator(device).manual_seed(seed))
        return {"prompt": self.decode(prompt[0].tolist()), "sample": self.decode(out[0, 64:].tolist()),
                **self.corpus}

    @classmethod
    def format_examples(cls, examples: dict[str, Any]) -> list[str]:
        if "sample" not in examples:
            return []
        return [f"-- prompt --\n{examples['prompt']}\n-- sample (temperature 0.8, top-k 20) --\n{examples['sample']}"]


def stdlib_files() -> list[Path]:
    """The standard library's own .py sources, sorted, without tests and installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    files = [p for p in root.rglob("*.py")
             if not skip & set(p.relative_to(root).parts[:-1]) and not p.name.startswith("test_")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@register_task
class PyStdlib(CharLMTask):
    name = "pystdlib"
    report = replace(CharLMTask.report,
                     description="character LM on this Python's standard library source (split by file); offline")
    offline = default = True

    def _texts(self) -> tuple[str, str]:
        root = Path(sysconfig.get_paths()["stdlib"])
        train, val = [], []
        self.files = stdlib_files()
        for path in self.files:
            rel = path.relative_to(root).as_posix()
            text = path.read_bytes().decode("utf-8", errors="replace")
            (val if zlib.crc32(rel.encode()) % 10 == 0 else train).append(text)
        if not train or not val:
            raise DatasetNotFoundError(f"pystdlib: no standard library sources under {root}")
        return "".join(train), "".join(val)

    def _source(self) -> str:
        return f"the standard library under {sysconfig.get_paths()['stdlib']}"

    def data_fingerprint(self) -> dict[str, Any]:
        """This Python's version and its standard library files' names and sizes (not their times: an
        installed library is the same data on every machine that has this version)."""
        self.setup()
        root = Path(sysconfig.get_paths()["stdlib"])
        return {"python": platform.python_version(), "implementation": platform.python_implementation(),
                **files_fingerprint(root, self.files, times=False)}


@register_task
class TinyShakespeare(CharLMTask):
    name = "tinyshakespeare"
    report = replace(CharLMTask.report,
                     description="Tiny Shakespeare (1,115,394 chars), nanoGPT's 90/10 split; --download")
    url: ClassVar[str] = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    budget = Budget(steps=2000, batch_size=12)  # nanoGPT's CPU recipe: 4x128, block 64, batch 12, 2000 iters
    options = {**CharLMTask.options, "block_size": replace(CharLMTask.options["block_size"], default=64)}

    @property
    def path(self) -> Path:
        return self.data_dir / "tinyshakespeare" / "input.txt"

    def _source(self) -> str:
        return str(self.path)

    def data_fingerprint(self) -> dict[str, Any]:
        return files_fingerprint(self.data_dir, [self.path])

    def _texts(self) -> tuple[str, str]:
        path = self.path
        if not path.exists():
            if not self.download:
                raise DatasetNotFoundError(f"tinyshakespeare: no {path}; add --download to fetch it, or point "
                                           "--data-dir at the folder that holds tinyshakespeare/input.txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            urllib.request.urlretrieve(self.url, tmp)
            tmp.replace(path)
        text = path.read_text(encoding="utf-8")
        n = int(len(text) * 0.9)
        return text[:n], text[n:]


@register_task
class TextFile(CharLMTask):
    name = "text_file"
    report = replace(CharLMTask.report,
                     description="your own text file as a character corpus (--data-dir PATH/TO/FILE), 90/10 split")
    local_data = True

    def _source(self) -> str:
        return str(self.data_dir)

    def data_fingerprint(self) -> dict[str, Any]:
        return files_fingerprint(self.data_dir.parent, [self.data_dir])

    def _texts(self) -> tuple[str, str]:
        if not self.data_dir.is_file():
            raise DatasetNotFoundError(f"text_file: {self.data_dir} is not a file; pass --data-dir PATH/TO/FILE.txt")
        try:
            text = self.data_dir.read_bytes().decode("utf-8")
        except OSError as e:
            raise DatasetError(f"text_file: cannot read {self.data_dir} ({e.strerror or e})") from None
        except UnicodeDecodeError as e:  # a binary file would train on replacement characters: refused
            raise DatasetError(f"text_file: {self.data_dir} is not UTF-8 text (byte {e.start}: {e.reason}); "
                               f"text_file reads UTF-8 text files only") from None
        if "\0" in text:
            raise DatasetError(f"text_file: {self.data_dir} is not text (a NUL byte at character {text.index(chr(0))}); "
                               f"text_file reads UTF-8 text files only")
        n = int(len(text) * 0.9)
        return text[:n], text[n:]
