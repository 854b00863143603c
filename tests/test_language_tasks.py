"""Language tasks: corpora, splits, windows, seq2seq encoding and metrics; the language harness end to end."""

from __future__ import annotations

import json
import math
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import assert_items_reproduce, record_file
from harness.cli import main
from tasks import DatasetError, DatasetNotFoundError, create_task
from tasks.language.lm import stdlib_files
from tasks.language.seq2seq import BOS, EOS, PAD, Seq2SeqTask

SMALL = {"block_size": 16, "eval_chars": 500}


def test_stdlib_corpus_excludes_tests_and_packages():
    files = stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    rel = [p.relative_to(root).parts for p in files]
    assert len(files) > 300 and files == sorted(files, key=lambda p: p.relative_to(root).as_posix())
    assert not any({"test", "tests", "idle_test", "site-packages"} & set(parts[:-1]) for parts in rel)
    assert not any(parts[-1].startswith("test_") for parts in rel)
    assert ("os.py",) in rel


@pytest.fixture(scope="module")
def pystdlib():
    task = create_task("pystdlib", **SMALL)
    task.setup()
    return task


def test_pystdlib_split_by_file_is_deterministic(pystdlib):
    again = create_task("pystdlib", **SMALL)
    again.setup()
    assert torch.equal(again.data["val"], pystdlib.data["val"]) and again.chars == pystdlib.chars
    corpus = pystdlib.corpus
    assert corpus["train_chars"] > 5 * corpus["val_chars"] > 0
    assert pystdlib.spec == {"kind": "language_modeling", "vocab_size": len(pystdlib.chars), "block_size": 16}
    text = pystdlib.decode(pystdlib.data["val"][:200].tolist())
    assert pystdlib.encode(text).tolist() == pystdlib.data["val"][:200].tolist()


def test_lm_windows_are_next_character_pairs(pystdlib):
    x, y = next(iter(pystdlib.train_batches(4, torch.Generator().manual_seed(0))))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert len(list(pystdlib.train_batches(4, torch.Generator()))) == pystdlib.steps_per_epoch(4)
    test = list(pystdlib.eval_batches("test", 8))
    assert sum(len(x) for x, _ in test) == math.ceil(500 / 16)  # consecutive windows over eval_chars
    first = torch.cat([x for x, _ in test])[:2].reshape(-1)
    assert torch.equal(first, pystdlib.data["val"][:32].long())


class Uniform(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


def test_lm_metrics_of_a_uniform_model(pystdlib):
    V = len(pystdlib.chars)
    m = pystdlib.evaluate(Uniform(V), pystdlib.eval_batches("val", 8))
    assert m["loss"] == pytest.approx(math.log(V), rel=1e-5)
    assert m["bpc"] == pytest.approx(math.log2(V), rel=1e-5)
    assert m["perplexity"] == pytest.approx(V, rel=1e-4)


def test_text_file_and_tinyshakespeare_from_files(tmp_path):
    text = "".join(f"line {i}: to be or not to be\n" for i in range(200))
    (tmp_path / "my.txt").write_text(text)
    task = create_task("text_file", data_dir=tmp_path / "my.txt", **SMALL)
    task.setup()
    n = int(len(text) * 0.9)
    assert task.decode(task.data["train"].tolist()) == text[:n] and task.decode(task.data["val"].tolist()) == text[n:]
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text(text)
    shakespeare = create_task("tinyshakespeare", data_dir=tmp_path, block_size=16)
    shakespeare.setup()
    assert shakespeare.corpus["train_chars"] == n  # nanoGPT's first 90% / last 10%
    with pytest.raises(DatasetNotFoundError, match="--download"):
        create_task("tinyshakespeare", data_dir=tmp_path / "nothing").setup()
    with pytest.raises(DatasetNotFoundError, match="not a file"):
        create_task("text_file", data_dir=tmp_path).setup()
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(DatasetError, match="too short"):
        create_task("text_file", data_dir=tmp_path / "short.txt", **SMALL).setup()


@pytest.fixture(scope="module")
def reverse():
    task = create_task("reverse")
    task.setup()
    return task


def test_seq2seq_encoding(reverse):
    src, tgt = reverse.tensors["test"]
    source, target = reverse.pairs["test"][0]
    assert reverse.decode(src[0].tolist()) == source and reverse.decode(tgt[0, 1:].tolist()) == target == source[::-1]
    assert tgt[0, 0] == BOS and tgt[0, len(target) + 1] == EOS and (tgt[0, len(target) + 2:] == PAD).all()
    assert reverse.spec["max_src_len"] == 25 and reverse.eval_splits == ("test", "long")
    s, t, pad = Seq2SeqTask._trim((src[:4], tgt[:4]))
    assert s.shape[1] == max(len(p[0]) for p in reverse.pairs["test"][:4])
    assert torch.equal(pad, s == PAD) and pad.any()  # the source mask, made on the host with the batch
    longest = max(range(len(src)), key=lambda i: len(reverse.pairs["test"][i][0]))
    s, _, pad = Seq2SeqTask._trim((src[[longest, longest]], tgt[[longest, longest]]))
    assert pad is None and (s != PAD).all()  # nothing padded: no mask for the attention kernels
    assert create_task("dates").eval_splits == ("test", "long")  # until setup finds no long split
    dates = create_task("dates")
    dates.setup()
    assert dates.eval_splits == ("test",)


class Oracle(nn.Module):
    """Decodes the gold target (looked up by source), optionally with one wrong token."""

    def __init__(self, task, wrong=False):
        super().__init__()
        src, tgt = task.tensors["test"]
        self.table = {tuple(s.tolist()): t[1:] for s, t in zip(src, tgt)}
        self.wrong = wrong

    def generate(self, src, src_pad, max_len):
        out = []
        for row, pad in zip(src, src_pad):
            key = tuple(row.tolist()) + (PAD,) * (len(next(iter(self.table))) - len(row))
            gold = self.table[key][:max_len].clone()
            if self.wrong:
                gold[0] = 3 if gold[0] != 3 else 4
            out.append(gold)
        return torch.stack(out)


def test_label_smoothing_option_changes_the_loss(reverse):
    smoothed = create_task("reverse", label_smoothing=0.1)
    smoothed.setup()
    batch = next(iter(reverse.eval_batches("test", 16)))
    model = Uniform(len(reverse.tokens))
    model.forward = lambda src, pad, tgt: torch.randn(*tgt.shape, len(reverse.tokens), generator=torch.Generator().manual_seed(0))
    assert smoothed.loss(model, batch) != reverse.loss(model, batch)


def test_seq2seq_metrics(reverse):
    perfect = reverse.evaluate(Oracle(reverse), reverse.eval_batches("test", 256))
    assert perfect == {"exact_match": 1.0, "token_accuracy": 1.0}
    off = reverse.evaluate(Oracle(reverse, wrong=True), reverse.eval_batches("test", 256))
    assert off["exact_match"] == 0.0 and 0.9 < off["token_accuracy"] < 1.0


def test_language_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["run", "language", "--tasks", "pystdlib,reverse", "--steps", "3", "--quiet", "--out", str(out),
                 "--task-opt", "block_size=16", "--task-opt", "eval_chars=500"])
    assert code == 0
    df = pd.read_csv(out / "leaderboard_language.csv")
    assert sorted(zip(df["task"], df["model"])) == [("pystdlib", "gpt"), ("pystdlib", "lstm"), ("pystdlib", "mamba"),
                                                    ("reverse", "lstm_seq2seq"), ("reverse", "transformer")]
    assert set(df["n_seeds"]) == {1} and set(df["steps"]) == {3}
    lm = df[df["task"] == "pystdlib"]
    assert set(lm["metric"]) == {"loss"} and not lm["higher_is_better"].any()
    assert lm["rank"].is_monotonic_increasing and lm["metric_mean"].is_monotonic_increasing  # lower loss ranks first
    record = json.loads(record_file(out / "runs/language/reverse/transformer-tiny-seed0.json").read_text())
    assert {"exact_match", "token_accuracy", "long_exact_match"} <= set(record["test"])
    assert len(record["examples"]["decoded"]) == 5
    gpt = json.loads(record_file(out / "runs/language/pystdlib/gpt-tiny-seed0.json").read_text())
    assert len(gpt["examples"]["sample"]) == 300 and gpt["config"]["task_options"]["block_size"] == 16
    capsys.readouterr()
    assert main(["examples", "--task", "pystdlib", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "== pystdlib / gpt" in shown and "-- sample" in shown
    assert main(["examples", "--task", "nothing", "--out", str(out)]) == 2
    assert assert_items_reproduce(out) == {"pystdlib": "language_modeling", "reverse": "seq2seq"}
