"""Results that are never silently wrong and work that is never lost (issue 14): the data is part of
a cell's identity, records keep their history, damaged files are rebuilt or skipped with a warning,
unusable checkpoints are set aside, and writes that fail at the end are rescued."""

from __future__ import annotations

import json

import pandas as pd
import numpy as np
import pytest
import torch
from conftest import record_file

import harness.records as records
import harness.trainer as trainer
from harness.cli import main
from harness.config import RunConfig, resolve
from harness.records import config_hash
from tasks import create_task
from zoo.registry import get_model_entry

CELL = ["run", "vision", "--models", "resnet", "--seeds", "1", "--quiet"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def records_of(folder, pattern="*.json"):
    return sorted(p for p in folder.glob(pattern) if not p.name.endswith(".failed.json"))


def test_other_data_is_another_cell_not_already_done(tmp_path, capsys):
    """text_file pointed at a changed file with the same --out trains again on the new data."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    argv = ["run", "language", "--tasks", "text_file", "--models", "lstm", "--data-dir", str(corpus), "--steps", "2",
            "--quiet", "--task-opt", "block_size=16", "--out", str(tmp_path / "out")]
    assert run(argv, capsys)[0] == 0
    code, _, err = run(argv, capsys)
    assert code == 0 and "already done, same configuration and data" in err
    corpus.write_text("pack my box with five dozen liquor jugs! " * 500)
    code, _, err = run(argv, capsys)
    assert code == 0 and "already done" not in err, err
    found = records_of(tmp_path / "out/runs/language/text_file")
    assert len(found) == 2  # both datasets' records are kept
    data = [json.loads(p.read_text())["config"]["data"] for p in found]
    assert data[0] != data[1]


def test_a_failed_rerun_never_replaces_a_good_record(tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path), "--steps", "2"]
    assert run([*CELL, *out], capsys)[0] == 0
    good = record_file(tmp_path / "runs/vision/digits/resnet-tiny-seed0.json")
    before = good.read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("broke on the rerun")

    monkeypatch.setattr(trainer, "run_cell", crash)
    code, _, err = run([*CELL, *out, "--force"], capsys)
    assert code == 1 and "broke on the rerun" in err
    assert good.read_text() == before  # the good record is untouched
    failed = json.loads(record_file(tmp_path / "runs/vision/digits/resnet-tiny-seed0.json", failed=True).read_text())
    assert failed["status"] == "failed"


def test_a_smoke_run_keeps_the_longer_record_and_the_leaderboard_says_which(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert run([*CELL, *out, "--steps", "4"], capsys)[0] == 0
    assert run([*CELL, *out, "--steps", "2"], capsys)[0] == 0
    found = records_of(tmp_path / "runs/vision/digits")
    assert sorted(json.loads(p.read_text())["config"]["total_steps"] for p in found) == [2, 4]
    board = pd.read_csv(tmp_path / "leaderboard_vision.csv")
    assert list(board["steps"]) == [2]  # the newest good configuration, named by its hash
    newest = json.loads(max(found, key=lambda p: json.loads(p.read_text())["finished"]).read_text())
    assert list(board["config_hash"]) == [newest["config_hash"]]
    code, _, err = run([*CELL, *out, "--steps", "4"], capsys)  # the longer one is still there: not rerun
    assert code == 0 and "already done" in err
    assert list(pd.read_csv(tmp_path / "leaderboard_vision.csv")["steps"]) == [4]


@pytest.mark.parametrize("damage", ["malformed", "binary", "empty", "truncated"])
def test_a_damaged_leaderboard_is_rebuilt_from_the_records(damage, tmp_path, capsys):
    out = ["--out", str(tmp_path), "--steps", "2"]
    assert run(["run", "vision", "--models", "vit", "--seeds", "1", "--quiet", *out], capsys)[0] == 0
    board = tmp_path / "leaderboard_vision.csv"
    text = board.read_text()
    board.write_bytes({"malformed": b'a,b\n"1,2,3\n4,5', "binary": bytes(range(256)) * 4, "empty": b"",
                       "truncated": text[: text.index("\n") + 1 + 30].encode()}[damage])
    code, _, err = run([*CELL, *out], capsys)
    assert code == 0, err
    assert "cannot be read" in err and "rebuilding it from the records" in err
    rebuilt = pd.read_csv(board)
    assert sorted(rebuilt["model"]) == ["resnet", "vit"] and rebuilt["metric_mean"].notna().all()


def test_a_record_with_a_wrong_type_is_skipped_with_a_warning(tmp_path, capsys):
    out = ["--out", str(tmp_path), "--steps", "2"]
    assert run([*CELL, *out], capsys)[0] == 0
    path = record_file(tmp_path / "runs/vision/digits/resnet-tiny-seed0.json")
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "metric_value": "0.98"}))
    code, _, err = run(["report", "--out", str(tmp_path)], capsys)
    assert code == 2 and f"skipping unreadable record {path}" in err and "metric_value has the wrong type" in err
    code, _, err = run([*CELL, *out], capsys)  # and the cell is run again rather than trusted
    assert code == 0 and "ignoring unreadable record" in err and "resnet seed 0: top1" in err
    assert isinstance(json.loads(path.read_text())["metric_value"], float)


def test_every_record_field_the_leaderboard_reads_is_checked():
    record = {"domain": "vision", "task": "digits", "model": "vit", "size": "tiny", "seed": 0, "status": "ok",
              "metric": "top1", "higher_is_better": True, "config_hash": "abc", "metric_value": 0.9, "test": {},
              "param_count": 10, "train_time_s": 1.0, "train_samples_per_sec": 2.0, "device": "cpu",
              "device_name": "x", "backend": "sdpa", "precision": "fp32", "torch_version": "2", "git_commit": "c",
              "finished": "2026", "config": {"total_steps": 2, "epochs": 1.0, "batch_size": 8, "lr": 1e-3,
                                             "weight_decay": 0.0}}
    assert records.record_problem(record) is None
    assert records.record_problem({**record, "seed": True}) == "field seed has the wrong type (True)"
    assert records.record_problem({**record, "status": "done"}) == "status 'done' is neither 'ok' nor 'failed'"
    assert "config.lr" in records.record_problem({**record, "config": {**record["config"], "lr": "big"}})
    assert records.record_problem({k: v for k, v in record.items() if k != "test"}) == "no field test"
    assert records.record_problem([1, 2]) == "not a cell record (not a JSON object)"


def test_a_record_that_cannot_be_written_at_the_end_is_rescued(tmp_path, capsys, monkeypatch):
    real = records.atomic_write

    def full_disk(path, data):
        if "runs" in str(path) and "attention-zoo-rescued" not in str(path):
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(records, "atomic_write", full_disk)
    monkeypatch.setattr(records, "rescue_dir", lambda: tmp_path / "rescued")
    code, _, err = run([*CELL, "--out", str(tmp_path / "out"), "--steps", "2"], capsys)
    assert code == 0, err
    assert "No space left on device" in err and "saved it as" in err
    saved = list((tmp_path / "rescued").rglob("resnet-tiny-seed0-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["status"] == "ok"
    items = saved[0].with_name(json.loads(saved[0].read_text())["items_file"])  # its per-item outcomes beside it
    assert items.exists() and len(np.load(items)["value"]) == 360


def _vit_cell(tmp_path):
    task = create_task("digits", data_dir=tmp_path / "data")
    task.setup()
    config = RunConfig(steps=3)
    return task, config, config_hash(resolve(task, get_model_entry("vit"), config))


def test_a_checkpoint_that_does_not_fit_is_set_aside_and_the_cell_starts_afresh(tmp_path, capsys):
    task, config, chash = _vit_cell(tmp_path)
    whole = trainer.run_cell(task, "vit", 0, config, progress=False)
    ckpt = tmp_path / "cell.ckpt"
    resnet = get_model_entry("resnet").create(task.spec)
    torch.save({"config_hash": chash, "model": resnet.state_dict()}, ckpt)  # loads, but not into a ViT
    record = trainer.run_cell(task, "vit", 0, config, progress=False, checkpoint=ckpt)
    err = capsys.readouterr().err
    assert f"checkpoint {ckpt} cannot be restored" in err and "set aside as cell.ckpt.unusable" in err
    assert (tmp_path / "cell.ckpt.unusable").exists() and not ckpt.exists()
    assert record["resumed_from_step"] is None and record["test"] == whole["test"]  # a clean, seeded start


def test_force_ignores_checkpoints(tmp_path, capsys):
    out = ["--out", str(tmp_path), "--steps", "2"]
    assert run([*CELL, *out], capsys)[0] == 0
    path = record_file(tmp_path / "runs/vision/digits/resnet-tiny-seed0.json")
    ckpt = path.with_suffix(".ckpt")
    ckpt.write_bytes(b"a checkpoint of an older attempt")
    code, _, err = run([*CELL, *out, "--force"], capsys)
    assert code == 0 and "resnet seed 0: top1" in err
    assert not ckpt.exists() and ckpt.with_name(ckpt.name + ".unusable").exists()
    assert json.loads(path.read_text())["resumed_from_step"] is None
