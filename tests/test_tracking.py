"""--track: finished cells logged to MLflow and TensorBoard, read back; a failing tracker only warns."""

from __future__ import annotations

import copy
import json
import sys
from datetime import datetime
from pathlib import Path

import mlflow
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness.cli import main
from harness.config import RunConfig
from harness.errors import UsageError
from harness.records import record_path, write_record
from harness.trainer import failure_record
from harness.tracking import ACCEPTED, TrackSpec, curve_steps, open_trackers, parse_track
from tasks import create_task

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # mlflow's store


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real run: vit on digits, 2 seeds, 2 epochs (records, per-item files, the leaderboard), plus the
    record of a failed cell of the same configuration (seed 7)."""
    out = tmp_path_factory.mktemp("sweep")
    assert main(["run", "vision", "--models", "vit", "--seeds", "2", "--epochs", "2", "--quiet",
                 "--out", str(out)]) == 0
    task = create_task("digits")
    task.setup()
    failed = failure_record(task, "vit", 7, RunConfig(epochs=2), RuntimeError("boom"))
    write_record(record_path(out, "vision", "digits", "vit", "tiny", 7, failed["config_hash"], failed=True), failed)
    return out


def records(sweep: Path, failed: bool = False) -> list[tuple[Path, dict]]:
    """(file, record) of the sweep's good records (or its failed one), by seed."""
    found = [(p, json.loads(p.read_text())) for p in sorted((sweep / "runs" / "vision" / "digits").glob("*.json"))]
    return [(p, r) for p, r in found if (r["status"] == "failed") == failed]


def ms(timestamp: str) -> int:
    return int(round(datetime.fromisoformat(timestamp).timestamp() * 1000))


def log_cells(cells: list[tuple[Path, dict]], specs: list[str], out: Path, domain: str = "vision",
              leaderboard: Path | None = None) -> None:
    trackers = open_trackers(parse_track(specs), out)
    for path, record in cells:
        trackers.cell(record, path)
    if leaderboard is not None:
        trackers.published(domain, leaderboard)
    trackers.close()


# ------------------------------------------------------------------------------------------ MLflow

def test_mlflow_runs_hold_the_records_params_curves_and_artifacts(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the current directory's ./mlruns
    out = tmp_path / "out"
    good = records(sweep)
    log_cells(good + records(sweep, failed=True), ["mlflow"], out, leaderboard=sweep / "leaderboard_vision.csv")

    assert (out / "mlflow.db").is_file() and not (tmp_path / "mlruns").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("attention-zoo/vision")
    assert experiment.artifact_location == (out / "mlflow-artifacts" / "vision").resolve().as_uri()
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["digits/vit/tiny/seed0", "digits/vit/tiny/seed1", "digits/vit/tiny/seed7"]
    for path, record in good:
        run = runs[f"digits/vit/tiny/seed{record['seed']}"]
        assert run.info.status == "FINISHED"
        assert (run.info.start_time, run.info.end_time) == (ms(record["started"]), ms(record["finished"]))
        params = run.data.params
        assert params["model"] == "vit" and params["seed"] == str(record["seed"])
        assert params["lr"] == str(record["config"]["lr"]) and params["config_hash"] == record["config_hash"]
        assert params["data.task"] == "digits"  # nested config keys, dotted
        assert run.data.tags["domain"] == "vision" and run.data.tags["mlflow.source.git.commit"] == record["git_commit"]
        curve = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_top1")]
        assert curve == [(int(row["epoch"]), row["val_top1"]) for row in record["history"]] == [
            (1, record["history"][0]["val_top1"]), (2, record["history"][1]["val_top1"])]
        def final(key: str) -> list[tuple[int, float]]:
            return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert final("metric_value") == final("test_top1") == [(2, record["metric_value"])]
        assert final("param_count") == [(2, record["param_count"])]
        assert final("test_loss") == [(2, record["test"]["loss"])]
        assert "time_to_target_s" not in run.data.metrics  # None in the record: left out
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {path.name, record["items_file"], "leaderboard_vision.csv", "leaderboard_vision.md"}
        stored = out / "mlflow-artifacts" / "vision" / run.info.run_id / "artifacts" / path.name
        assert json.loads(stored.read_text()) == record

    failed = runs["digits/vit/tiny/seed7"]
    assert failed.info.status == "FAILED" and failed.data.tags["failure_reason"] == "RuntimeError: boom"
    assert failed.data.params["lr"] == str(good[0][1]["config"]["lr"]) and not failed.data.metrics


def test_mlflow_takes_another_uri_and_reuses_its_experiment(sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # another database: its artifacts still go under --out, never to ./mlruns
    uri = f"sqlite:///{tmp_path / 'elsewhere' / 'track.db'}"
    for cells in (records(sweep)[:1], records(sweep)[1:]):  # two sweeps, one store
        log_cells(cells, [f"mlflow={uri}"], tmp_path / "out")
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if e.name.startswith("attention-zoo/")]
    assert [e.name for e in experiments] == ["attention-zoo/vision"]
    assert len(client.search_runs([experiments[0].experiment_id])) == 2
    assert not (tmp_path / "out" / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert (tmp_path / "out" / "mlflow-artifacts" / "vision").is_dir()
    assert "warning" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------- TensorBoard

def test_tensorboard_event_files_hold_the_curve_and_final_numbers(sweep, tmp_path):
    (path, record), = records(sweep)[:1]
    for _ in range(2):  # logged again (a rerun): its event file is replaced, not added to
        log_cells([(path, record)] + records(sweep, failed=True), ["tensorboard"], tmp_path)
    folder = tmp_path / "tensorboard" / "vision" / "digits" / f"vit-tiny-seed0-{record['config_hash']}"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # the failed cell wrote nothing
    events = EventAccumulator(str(folder))
    events.Reload()
    history, started = record["history"], datetime.fromisoformat(record["started"]).timestamp()
    for tag, key in (("val/top1", "val_top1"), ("val/loss", "val_loss"), ("train/loss", "train_loss")):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [int(row["epoch"]) for row in history]
        assert [e.value for e in scalars] == pytest.approx([row[key] for row in history], rel=1e-6)
        walls = [started + row["train_time_s"] for row in history]  # the start plus the training time
        assert [e.wall_time for e in scalars] == pytest.approx(walls, rel=0, abs=1e-3)
    (test,) = events.Scalars("test/top1")
    assert (test.step, test.value) == (2, pytest.approx(record["metric_value"], rel=1e-6))
    assert events.Scalars("cost/param_count")[0].value == record["param_count"]
    assert "record/text_summary" in events.Tags()["tensors"]


def test_curve_steps_are_epochs_or_optimizer_steps():
    assert curve_steps([{"epoch": 1.0, "step": 20}, {"epoch": 2.0, "step": 40}]) == [1, 2]
    # a budget in steps that ends mid-epoch: epochs would fold together, so optimiser steps
    assert curve_steps([{"epoch": 0.5, "step": 10}, {"epoch": 1.0, "step": 20}]) == [10, 20]
    assert curve_steps([{"val_top1": 0.5}, {"val_top1": 0.6}]) == [1, 2]


# ------------------------------------------------------------------------------------------ failures

def test_a_failing_tracker_warns_once_per_cell_and_the_others_go_on(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cells = records(sweep)
    before = [path.read_bytes() for path, _ in cells]
    log_cells(cells, ["mlflow=http://user:secret@127.0.0.1:9,tensorboard"], tmp_path,
              leaderboard=sweep / "leaderboard_vision.csv")
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: --track mlflow: ")]
    assert len(warnings) == 2, err  # one per cell: the server is tried again for the second
    assert all(w.startswith("warning: --track mlflow: cannot log digits/vit/tiny/seed")
               and "http://user:***@127.0.0.1:9" in w and w.endswith(f"; the cell's record is kept at {path}")
               for w, (path, _) in zip(warnings, cells))
    assert "secret" not in err  # the URI's password is never shown
    assert [path.read_bytes() for path, _ in cells] == before
    assert len(list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))) == 2


def test_an_unwritable_tensorboard_folder_warns(sweep, tmp_path, capsys):
    (tmp_path / "tensorboard").write_text("a file where the folder should be")
    log_cells(records(sweep)[:1], ["tensorboard"], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --track tensorboard: cannot log digits/vit/tiny/seed0")


def test_tracking_leaves_the_record_as_it_was(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trackers = open_trackers(parse_track(["mlflow", "tensorboard"]), tmp_path)
    for path, record in records(sweep) + records(sweep, failed=True):
        before = copy.deepcopy(record)
        trackers.cell(record, path)
        assert record == before


def test_no_trackers_do_nothing(sweep, tmp_path):
    trackers = open_trackers(parse_track(None), tmp_path)
    for path, record in records(sweep):
        trackers.cell(record, path)
    trackers.published("vision", sweep / "leaderboard_vision.csv")
    trackers.close()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ --track

@pytest.mark.parametrize("values, specs", [
    (["mlflow"], [TrackSpec("mlflow")]),
    (["tensorboard", "mlflow=http://host:5000"], [TrackSpec("tensorboard"), TrackSpec("mlflow", "http://host:5000")]),
    (["mlflow=sqlite:////x/y.db,tensorboard"], [TrackSpec("mlflow", "sqlite:////x/y.db"), TrackSpec("tensorboard")]),
    ([], []),
    (None, []),
])
def test_track_values(values, specs):
    assert parse_track(values) == specs


@pytest.mark.parametrize("values, message", [
    (["foo"], "--track: unknown tracker 'foo'"),
    (["mlflow,wandb"], "unknown tracker 'wandb'"),
    (["tensorboard=x"], "tensorboard takes no URI"),
    (["mlflow", "mlflow=http://h:5000"], "mlflow is named more than once"),
    (["tensorboard,tensorboard"], "tensorboard is named more than once"),
    ([""], "an empty value"),
    (["mlflow,"], "an empty value"),
    (["mlflow="], "names no URI"),
])
def test_bad_track_values_are_one_line_usage_errors(values, message):
    with pytest.raises(UsageError) as error:
        parse_track(values)
    text = str(error.value)
    assert message in text and text.endswith(f"accepted: {ACCEPTED}") and "\n" not in text


@pytest.mark.parametrize("tracker, module", [("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")])
def test_a_missing_package_is_a_usage_error(tracker, module, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    needs = rf"--track {tracker} needs the {tracker} package: pip install -e '\.\[track\]'"
    with pytest.raises(UsageError, match=needs):
        open_trackers(parse_track([tracker]), tmp_path)


# ------------------------------------------------------------------------------ through the sweep

def test_run_with_track_logs_each_cell_and_the_leaderboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["run", "vision", "--models", "vit", "--seeds", "1", "--epochs", "1", "--quiet", "--out", str(out),
                 "--track", "mlflow", "--track", "tensorboard"]) == 0
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("attention-zoo/vision")
    (run,) = client.search_runs([experiment.experiment_id])
    (path, record), = [(p, json.loads(p.read_text())) for p in (out / "runs" / "vision" / "digits").glob("*.json")]
    assert run.data.params["config_hash"] == record["config_hash"] and run.info.status == "FINISHED"
    assert run.data.metrics["metric_value"] == pytest.approx(record["metric_value"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {path.name, "leaderboard_vision.csv"} <= artifacts
    assert list((out / "tensorboard" / "vision" / "digits").glob(f"vit-tiny-seed0-{record['config_hash']}/events.*"))
    assert not (tmp_path / "mlruns").exists()


def test_run_with_a_tracker_that_fails_keeps_every_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    out = tmp_path / "out"
    assert main(["run", "vision", "--models", "vit", "--seeds", "2", "--epochs", "1", "--quiet", "--out", str(out),
                 "--track", "mlflow=http://127.0.0.1:9"]) == 0
    assert len(list((out / "runs" / "vision" / "digits").glob("vit-tiny-seed*.json"))) == 2
    assert (out / "leaderboard_vision.csv").is_file()
    err = capsys.readouterr().err
    assert err.count("warning: --track mlflow") >= 2  # each cell, then the leaderboard; never an exception


def test_run_with_a_bad_track_value_stops_before_training(tmp_path, capsys):
    assert main(["run", "vision", "--models", "vit", "--out", str(tmp_path), "--track", "wandb"]) == 2
    assert "accepted: mlflow[=URI], tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
