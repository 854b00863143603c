"""Results that are never silently wrong and work that is never lost (issue 14): the data is part of
a cell's identity, records keep their history, damaged files are rebuilt or skipped with a warning,
unusable checkpoints are set aside, and writes that fail at the end are rescued."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd
import numpy as np
import pytest
import torch
from conftest import record_file

import harness.records as records
import harness.schema as schema
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
    assert schema.problem_of(record) is None
    assert schema.problem_of({**record, "seed": True}) == "field seed has the wrong type (True)"
    assert schema.problem_of({**record, "status": "done"}) == "status 'done' is neither 'ok' nor 'failed'"
    assert "config.lr" in schema.problem_of({**record, "config": {**record["config"], "lr": "big"}})
    assert schema.problem_of({k: v for k, v in record.items() if k != "test"}) == "no field test"
    assert schema.problem_of([1, 2]) == "not a cell record (not a JSON object)"
    assert schema.problem_of({**record, "history": "none"}) == "field history has the wrong type ('none')"
    old = schema.Record.read({k: v for k, v in record.items()} | {"train_samples": 300})  # version 1: no schema_version
    assert old.schema_version == schema.SCHEMA_VERSION and old.family == "unknown" and old.tuning == "default"
    assert old.train_size == 300 and old["metric"] == "top1" and old.get("tuned") is None
    again = schema.Record.read(old.to_json() | {"added_later": 1})
    assert again.extra == {"added_later": 1} and again.to_json()["added_later"] == 1 and again.train_size == 300


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


# ------------------------------------------------------------------------------------------------
# issue 29: no finished work lost, no traceback, resume that equals an uninterrupted run
# ------------------------------------------------------------------------------------------------

class RefusedWrites:
    """A folder that stops taking files (read-only, or full) once ``on`` is set: every open for writing,
    file creation, rename, removal and new folder under ``root`` fails with ``errno_``, as the kernel's
    would. (The tests may run as root, for whom a chmod-ed folder still takes files.)"""

    WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, root, monkeypatch, errno_=errno.EROFS, on=False):
        import builtins
        import io
        self.root, self.errno, self.on = os.path.abspath(root), errno_, on
        real = {name: getattr(os, name) for name in ("open", "unlink", "remove", "replace", "rename", "mkdir")}
        real_open = builtins.open

        def refuse(path):
            if self.on and os.path.abspath(os.fspath(path)).startswith(self.root):
                raise OSError(self.errno, os.strerror(self.errno), os.fspath(path))

        def os_open(path, flags, *args, **kwargs):
            if flags & self.WRITING:
                refuse(path)
            return real["open"](path, flags, *args, **kwargs)

        def py_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def one(name):
            def call(path, *args, **kwargs):
                refuse(path)
                return real[name](path, *args, **kwargs)
            return call

        def two(name):
            def call(src, dst, *args, **kwargs):
                refuse(src)
                refuse(dst)
                return real[name](src, dst, *args, **kwargs)
            return call

        def mkdir(path, *args, **kwargs):
            if not os.path.isdir(path):
                refuse(path)
            return real["mkdir"](path, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", py_open)
        monkeypatch.setattr(io, "open", py_open)
        for name in ("unlink", "remove"):
            monkeypatch.setattr(os, name, one(name))
        for name in ("replace", "rename"):
            monkeypatch.setattr(os, name, two(name))
        monkeypatch.setattr(os, "mkdir", mkdir)


def _checkpoints_refused(monkeypatch, error=errno.ENOSPC):
    """torch.save of a cell's checkpoint fails as on a full disk (the write, not the open)."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:
            raise OSError(error, os.strerror(error))
        return real(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)


SAVES = ["--epochs", "3", "--batch-size", "512", "--checkpoint-minutes", "0.0001"]  # 3 steps an epoch, saves between


def test_a_checkpoint_that_cannot_be_written_never_loses_the_cell(tmp_path, capsys, monkeypatch):
    _checkpoints_refused(monkeypatch)
    code, _, err = run([*CELL, "--out", str(tmp_path), *SAVES], capsys)
    assert code == 0 and "Traceback" not in err, err
    warned = [line for line in err.splitlines() if "cannot write the checkpoint" in line]
    assert len(warned) == 1 and "No space left on device" in warned[0] and ".ckpt" in warned[0], err
    record = json.loads(record_file(tmp_path / "runs/vision/digits/resnet-tiny-seed0.json").read_text())
    assert record["status"] == "ok" and len(record["history"]) == 3
    assert not list(tmp_path.rglob("*.ckpt*")) and not list(tmp_path.rglob("*.tmp"))


def test_out_turning_read_only_mid_sweep_loses_no_finished_cell(tmp_path, capsys, monkeypatch):
    import harness.sweep as sweep
    out = tmp_path / "out"
    refused = RefusedWrites(out, monkeypatch)
    real_write = sweep.write_record

    def then_read_only(path, record):
        written = real_write(path, record)
        refused.on = True  # the first cell's record is written; from here --out takes nothing
        return written
    monkeypatch.setattr(sweep, "write_record", then_read_only)
    monkeypatch.setattr(records, "rescue_dir", lambda: tmp_path / "rescued")
    code, _, err = run(["run", "vision", "--models", "resnet,vit", "--seeds", "1", "--quiet", "--out", str(out), *SAVES],
                       capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "digits/vit seed 0: top1" in err and "cannot write the checkpoint" in err
    assert "cannot open the lock file" in err and "saved it as" in err
    assert len(list((out / "runs/vision/digits").glob("resnet-tiny-seed0-*.json"))) == 1
    rescued = [json.loads(p.read_text()) for p in (tmp_path / "rescued").rglob("vit-tiny-seed0-*.json")]
    assert [r["status"] for r in rescued] == ["ok"]  # the second cell's result, kept


def _items_file(out, model="vit"):
    (path,) = (out / "runs/vision/digits").glob(f"{model}-tiny-seed0-*.items.npz")
    return path


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "not-a-zip": lambda data: b"these are not the per-item outcomes\n" * 20,
    "missing-arrays": lambda data: _npz(item=np.arange(3)),
}


def _npz(**arrays):
    import io
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def two_cells(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_cells")
    assert main(["run", "vision", "--models", "vit,resnet", "--seeds", "1", "--steps", "2", "--quiet",
                 "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_items_file_is_set_aside_by_every_reader(damage, two_cells, tmp_path, capsys):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(two_cells, out)
    items = _items_file(out)
    items.write_bytes(DAMAGE[damage](items.read_bytes()))
    found = records.read_record_files(out / "runs")
    outcomes = records.load_outcomes(found)  # what report, compare and publish read
    err = capsys.readouterr().err
    assert f"{items} cannot be read" in err and f"set aside as {items.name}.unusable" in err, err
    assert {k[2] for k in outcomes} == {"resnet"} and items.with_name(items.name + ".unusable").exists()
    for argv in (["report", "--out", str(out)], ["compare", "digits", "vit", "resnet", "--out", str(out)]):
        code, _, err = run(argv, capsys)
        assert code in (0, 2) and "Traceback" not in err, err
        assert f"the per-item file {items} of" in err and "is missing; its cell counts as not done" in err, err


def test_a_damaged_items_file_counts_as_not_done_and_trains_again(two_cells, tmp_path, capsys):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(two_cells, out)
    items = _items_file(out)
    items.write_bytes(DAMAGE["truncated"](items.read_bytes()))
    code, _, err = run(["run", "vision", "--models", "vit,resnet", "--seeds", "1", "--steps", "2", "--quiet",
                        "--out", str(out)], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert f"{items} cannot be read" in err and "digits/vit seed 0: top1" in err  # trained again
    assert "resnet seed 0: already done" in err
    assert len(np.load(_items_file(out))["value"]) == 360
    code, out_text, err = run(["compare", "digits", "vit", "resnet", "--out", str(out)], capsys)
    assert code == 0 and "Traceback" not in err, err


def test_a_leaderboard_row_that_holds_no_number_is_rebuilt(two_cells, tmp_path, capsys):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(two_cells, out)
    for path in (out / "runs/vision/digits").glob("vit-*"):  # a row the leaderboard keeps without its records
        path.unlink()
    board = out / "leaderboard_vision.csv"
    df = pd.read_csv(board)
    df["metric_mean"] = df["metric_mean"].astype(object)
    df.loc[df["model"] == "vit", "metric_mean"] = "abc"
    df.to_csv(board, index=False)
    code, _, err = run(["run", "vision", "--models", "resnet", "--seeds", "2", "--steps", "2", "--quiet",
                        "--out", str(out)], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "metric_mean is 'abc', not a number" in err and "rebuilding it from the records" in err
    assert pd.to_numeric(pd.read_csv(board)["metric_mean"]).notna().all()


def test_a_full_disk_at_the_leaderboard_and_report_html_rescues_them(tmp_path, capsys, monkeypatch):
    real = records.atomic_write

    def full_disk(path, data):
        if path.name in ("leaderboard_vision.csv", "report.html") and "rescued" not in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(records, "atomic_write", full_disk)
    monkeypatch.setattr(records, "rescue_dir", lambda: tmp_path / "rescued")
    code, _, err = run([*CELL, "--out", str(tmp_path / "out"), "--steps", "2"], capsys)
    assert code == 0 and "Traceback" not in err, err
    for name in ("leaderboard_vision.csv", "report.html"):
        assert f"cannot write {tmp_path / 'out' / name} (No space left on device); saved it as" in err
        assert len(list((tmp_path / "rescued").rglob(name))) == 1


def test_report_into_a_read_only_folder_is_one_line(two_cells, tmp_path, capsys, monkeypatch):
    RefusedWrites(two_cells, monkeypatch, on=True)
    code, _, err = run(["report", "--out", str(two_cells)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "not a writable directory (Read-only file system)" in err


def test_ctrl_c_while_planning_is_one_line(tmp_path, capsys, monkeypatch):
    import harness.sweep as sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "make_plan", interrupted)
    code, _, err = run([*CELL, "--out", str(tmp_path), "--steps", "2"], capsys)
    assert code == 130 and "Traceback" not in err and "harness: interrupted" in err


def test_ctrl_c_while_starting_up_is_one_line(tmp_path):
    """A Ctrl-C while the harness imports torch (seconds after start): exit 130 and one line."""
    import subprocess
    import sys
    script = ("import runpy, sys\n"
              "class CtrlC:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'torch':\n"
              "            raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, CtrlC())\n"
              "sys.argv = ['harness', 'list']\n"
              "runpy.run_module('harness', run_name='__main__')\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "harness: interrupted while starting"


def test_integer_options_equal_configurations_hash_equal(tmp_path, capsys):
    out = ["--out", str(tmp_path), "--steps", "2", "--models", "vit"]
    assert run(["run", "vision", "--seeds", "1", "--quiet", *out, "--model-opt", "dropout=0"], capsys)[0] == 0
    code, _, err = run(["run", "vision", "--seeds", "1", "--quiet", *out, "--model-opt", "dropout=0.0"], capsys)
    assert code == 0 and "already done" in err, err  # dropout=0 and dropout=0.0 are one configuration


def test_a_cell_claimed_by_another_process_is_skipped(two_cells, tmp_path, capsys):
    """The same sweep started twice: a cell that the other process trains now is left to it."""
    import fcntl
    import shutil
    out = tmp_path / "out"
    shutil.copytree(two_cells, out)
    (record,) = (out / "runs/vision/digits").glob("resnet-tiny-seed0-*.json")
    before = record.read_text()
    with open(record.with_suffix(".lock"), "a") as held:  # as the other process's claim holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = run([*CELL, "--out", str(out), "--steps", "2", "--force"], capsys)
    assert code == 0 and "resnet seed 0: skipped, another process is training it now" in err, err
    assert "0 to run" in err and record.read_text() == before  # nothing trained, nothing replaced
    code, _, err = run([*CELL, "--out", str(out), "--steps", "2", "--force"], capsys)  # released: it runs
    assert code == 0 and "digits/resnet seed 0: top1" in err
    assert not list((out / "runs").rglob("*.lock"))  # claims are removed once their records are written


def test_a_nan_loss_names_the_step_where_it_became_nan(tmp_path, monkeypatch):
    task = create_task("digits", data_dir=tmp_path / "data")
    task.setup()
    real_loss, real_step, taken = task.loss, trainer.CellTrainer._optimizer_step, []

    def optimizer_step(self):
        real_step(self)
        taken.append(1)

    def loss(model, batch):  # finite for two steps, NaN in the third, infinite after it
        value = real_loss(model, batch)
        return value * float("nan") if len(taken) == 2 else value * float("inf") if len(taken) > 2 else value
    monkeypatch.setattr(trainer.CellTrainer, "_optimizer_step", optimizer_step)
    monkeypatch.setattr(task, "loss", loss)
    with pytest.raises(trainer.TrainingDiverged, match=r"training loss became nan at step 3$"):
        trainer.run_cell(task, "resnet", 0, RunConfig(steps=5, batch_size=256), progress=False)


def test_a_bad_checkpoint_warning_gives_no_unsafe_advice(tmp_path, capsys):
    task, config, _ = _vit_cell(tmp_path)
    ckpt = tmp_path / "cell.ckpt"
    ckpt.write_bytes(b"\x80\x02garbage, not a checkpoint")
    record = trainer.run_cell(task, "vit", 0, config, progress=False, checkpoint=ckpt)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "cannot be restored" in line]
    assert record["status"] == "ok" and "weights_only" not in line and "False" not in line, line
    assert "set aside as cell.ckpt.unusable" in line


def _stop_at_step(monkeypatch, step):
    """Ask the cell to stop (as Ctrl-C and SIGTERM do, harness.stopping) once it has taken ``step`` steps."""
    from harness.stopping import request_stop
    real = trainer.CellTrainer._optimizer_step

    def optimizer_step(self):
        real(self)
        if self.state.step + 1 == step:
            request_stop()
    monkeypatch.setattr(trainer.CellTrainer, "_optimizer_step", optimizer_step)
    return real


CORPUS = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 60


@pytest.mark.parametrize("task_name, model, opts, batch", [
    ("digits", "vit", (("dropout", 0.1),), 256),  # a shuffled order drawn when the epoch starts, and dropout
    ("text_file", "lstm", (), 8),  # random windows drawn batch by batch
], ids=["digits-vit-dropout", "text_file-lstm"])
def test_a_resume_in_mid_epoch_equals_the_uninterrupted_run(task_name, model, opts, batch, tmp_path, monkeypatch):
    from harness.stopping import StopRequested, clear_stop
    (tmp_path / "corpus.txt").write_text(CORPUS)
    task = create_task(task_name, **({"data_dir": tmp_path / "corpus.txt", "block_size": 16, "eval_chars": 400}
                                     if task_name == "text_file" else {}))
    task.load()
    config = RunConfig(steps=8, batch_size=batch, model_opts=opts)
    per_epoch = task.steps_per_epoch(batch)
    assert per_epoch > 3  # the stop falls inside the first epoch, the run spans two
    whole = trainer.run_cell(task, model, 0, config, progress=False)
    ckpt = tmp_path / "cell.ckpt"
    real = _stop_at_step(monkeypatch, 2)
    try:
        with pytest.raises(StopRequested):
            trainer.run_cell(task, model, 0, config, progress=False, checkpoint=ckpt)
    finally:
        clear_stop()
    monkeypatch.setattr(trainer.CellTrainer, "_optimizer_step", real)
    resumed = trainer.run_cell(task, model, 0, config, progress=False, checkpoint=ckpt)
    assert resumed["resumed_from_step"] == 2
    assert resumed["test"] == whole["test"] and resumed["train_samples"] == whole["train_samples"]
    assert [{k: v for k, v in h.items() if k != "train_time_s"} for h in resumed["history"]] == \
        [{k: v for k, v in h.items() if k != "train_time_s"} for h in whole["history"]]
    for name, column in whole["items"].items():
        assert np.array_equal(resumed["items"][name], column), name


PLUGIN = '''
"""A model whose initialisation a test changes between two runs."""
from torch import nn
from zoo.registry import Recipe, Sizes, register_model


@register_model("editable", family="mlp", kinds="classification", modalities="image",
                sizes=Sizes({{"tiny": {{"hidden": 16}}, "small": {{"hidden": 32}}, "base": {{"hidden": 64}}}}, width="hidden"),
                recipe=Recipe(lr=1e-3))
def editable(spec, hidden):
    """{doc}"""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, spec["num_classes"]))
    nn.init.normal_(model[1].weight, std={std})
    return model
'''


def test_a_change_to_a_models_code_makes_its_earlier_cell_count_as_not_done(tmp_path, capsys, monkeypatch,
                                                                           clean_registry):
    """Cell identity covers the code (harness.code): a new initialisation is a new cell; a docstring is not."""
    import importlib
    import sys as _sys

    from harness import code
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = tmp_path / "editable_model.py"
    argv = ["run", "vision", "--models", "editable", "--plugin", "editable_model", "--seeds", "1", "--steps", "2",
            "--quiet", "--out", str(tmp_path / "out")]

    def run_with(std: float, doc: str) -> str:
        plugin.write_text(PLUGIN.format(std=std, doc=doc))
        clean_registry_models = __import__("zoo.registry", fromlist=["_MODELS"])._MODELS
        clean_registry_models.pop("editable", None)
        _sys.modules.pop("editable_model", None)
        importlib.invalidate_caches()
        code.forget()
        assert main(argv) == 0
        return capsys.readouterr().err

    assert "already done" not in run_with(0.02, "An MLP.")
    assert "already done" in run_with(0.02, "An MLP, the same code.")  # a docstring: the same cell
    assert "already done" not in run_with(0.5, "An MLP.")  # another initialisation: another cell
    records = sorted((tmp_path / "out" / "runs" / "vision" / "digits").glob("editable-*.json"))
    assert len(records) == 2 and len({json.loads(p.read_text())["config"]["code"] for p in records}) == 2
