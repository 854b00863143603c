"""Tuning parity (harness tune): equal trials per model read back from the study database, a killed
tune that reruns only the missing trials, no test evaluation during tuning, and the leaderboard row
trained with the chosen values."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

import harness.executors as executors
import tasks
import zoo.registry as registry
from harness import trial as trials
from harness.cli import main
from harness.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DIGITS = tasks.get_task_class("digits")


def studies(out: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Every study in out/tuning.db with its trials, read back from the database."""
    storage = f"sqlite:///{out / 'tuning.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
            for s in optuna.get_all_study_summaries(storage)}


def counted(found: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in found if t.state in trials.COUNTED]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tune of resnet and vit on digits (3 trials each, 2 epochs, 1 seed), with every split that
    the task evaluated, and whether a tuning trial was running at the time."""
    out = tmp_path_factory.mktemp("tune")
    evaluated: list[tuple[bool, str]] = []
    in_trial = [False]
    original_batches, original_trial = DIGITS.eval_batches, executors.run_trial

    def eval_batches(self, split, batch_size):
        evaluated.append((in_trial[0], split))
        return original_batches(self, split, batch_size)

    def run_trial(*args, **kwargs):
        in_trial[0] = True
        try:
            return original_trial(*args, **kwargs)
        finally:
            in_trial[0] = False

    mp = pytest.MonkeyPatch()
    mp.setattr(DIGITS, "eval_batches", eval_batches)
    mp.setattr(executors, "run_trial", run_trial)
    try:
        code = main(["tune", "vision", "--models", "resnet,vit", "--trials", "3", "--epochs", "2", "--seeds", "1",
                     "--out", str(out), "--quiet"])
    finally:
        mp.undo()
    return out, code, evaluated


def test_every_model_gets_the_same_trials_read_back_from_the_database(tuned):
    out, code, _ = tuned
    assert code == 0
    found = studies(out)
    assert sorted(name.split("/")[:3] for name in found) == [["digits", "resnet", "tiny"], ["digits", "vit", "tiny"]]
    for name, study_trials in found.items():
        assert len(counted(study_trials)) == 3, name
        first = study_trials[0]
        model = name.split("/")[1]
        entry = registry.get_model_entry(model)
        assert first.user_attrs.get("default") is True
        assert first.params == trials.default_params(entry, DIGITS(data_dir="data"), RunConfig()), name


def test_no_trial_evaluates_the_test_split(tuned):
    _, code, evaluated = tuned
    assert code == 0
    assert (True, "val") in evaluated  # the trials validated (the pruner's curve) ...
    assert (True, "test") not in evaluated  # ... and never looked at the test split
    assert (False, "test") in evaluated  # the chosen configurations were tested, after tuning


def test_the_leaderboard_row_is_trained_with_the_chosen_values(tuned):
    out, _, _ = tuned
    board = pd.read_csv(out / "leaderboard_vision.csv")
    assert set(board["tuning"]) == {"tpe-3"}
    for name, study_trials in studies(out).items():
        model = name.split("/")[1]
        done = [t for t in counted(study_trials) if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(done, key=lambda t: (t.value, -t.number))  # top1: higher is better; ties: the earlier
        record = json.loads(next((out / "runs" / "vision" / "digits").glob(f"{model}-tiny-seed0-*.json")).read_text())
        assert record["tuning"] == "tpe-3" and record["tuned"]["chosen"] == best.params
        assert record["tuned"]["study"] == name and len(record["tuned"]["history"]) == 3
        config = record["config"]
        assert (config["lr"], config["weight_decay"], config["warmup_frac"]) == \
               (best.params["lr"], best.params["weight_decay"], best.params["warmup_frac"])
        assert config["model_options"]["dropout"] == best.params["dropout"]
        row = board[board["model"] == model].iloc[0]
        for column in ("lr", "weight_decay", "warmup_frac", "dropout"):
            assert math.isclose(row[column], best.params[column], rel_tol=1e-5), (model, column)


def test_the_report_sets_tuned_against_default_with_the_history(tuned):
    out, _, _ = tuned
    text = (out / "REPORT.md").read_text()
    assert "## Tuning: every model tuned alike" in text
    assert (out / "plots" / "vision_digits_tuning.png").stat().st_size > 0
    table = pd.read_csv(out / "tuning.csv")
    assert sorted(table["model"]) == ["resnet", "vit"] and set(table["trials"]) == {3}


def test_the_search_space_is_one_rule_and_holds_the_defaults():
    task = DIGITS(data_dir="data")
    for name in registry.list_models():
        entry = registry.get_model_entry(name)
        space = trials.search_space(entry, RunConfig())
        lr0 = entry.defaults.get("lr", 1e-3)
        assert space["lr"].log and math.isclose(space["lr"].low, lr0 / 10) and math.isclose(space["lr"].high, lr0 * 10)
        assert (space["weight_decay"].low, space["weight_decay"].high) == trials.WEIGHT_DECAY
        assert (space["warmup_frac"].low, space["warmup_frac"].high) == trials.WARMUP_FRAC
        assert ("dropout" in space) == ("dropout" in entry.presets["tiny"]), name
        for key, value in trials.default_params(entry, task, RunConfig()).items():
            assert space[key].low <= value <= space[key].high, (name, key, value)


def _sqlite_trials(db: Path) -> list[tuple[int, str, str | None]]:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute("select number, state, datetime_complete from trials order by number").fetchall()
    except sqlite3.OperationalError:  # the tune has not created its tables yet
        return []


def test_a_killed_tune_reruns_only_the_missing_trials(tmp_path):
    argv = [sys.executable, "-m", "harness", "tune", "vision", "--models", "resnet", "--trials", "3",
            "--epochs", "12", "--seeds", "1", "--out", str(tmp_path), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "tuning.db"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            found = _sqlite_trials(db) if db.exists() else []
            states = [s for _, s, _ in found]
            if "COMPLETE" in states and states[-1] == "RUNNING":
                proc.kill()  # SIGKILL in the middle of a trial: no handler runs
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    before = _sqlite_trials(db)
    assert [s for _, s, _ in before][-1] == "RUNNING", before  # killed mid-study, mid-trial
    finished = [(n, done) for n, s, done in before if s in ("COMPLETE", "PRUNED")]
    assert 1 <= len(finished) < 3

    rerun = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{3 - len(finished)} trial(s) to run" in rerun.stderr
    after = _sqlite_trials(db)
    assert [(n, done) for n, s, done in after if (n, done) in finished] == finished  # kept, not rerun
    assert dict((n, s) for n, s, _ in after)[before[-1][0]] == "FAIL"  # the killed trial: failed, not counted
    assert sum(s in ("COMPLETE", "PRUNED") for _, s, _ in after) == 3
    assert len(after) == len(before) + 3 - len(finished)  # exactly the missing trials were added
    assert len(list((tmp_path / "runs" / "vision" / "digits").glob("resnet-tiny-seed0-*.json"))) == 1


def test_tuning_refuses_flags_that_fix_what_it_chooses(capsys):
    assert main(["tune", "vision", "--trials", "2", "--lr", "0.01", "--out", "unused"]) == 2
    assert "--lr: tuning chooses it" in capsys.readouterr().err
    assert main(["run", "vision", "--tune", "2", "--model-opt", "dropout=0.1", "--out", "unused"]) == 2
    assert "--model-opt dropout: tuning chooses it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["tune", "vision", "--trials", "0"])
    assert e.value.code == 2
    assert not Path("unused").exists()


@pytest.mark.parametrize("where", [["--jobs", "2"], ["--executor", "ray"]], ids=["jobs", "ray"])
def test_parallel_trials_share_one_database(where, tmp_path, capsys):
    if "ray" in where:
        pytest.importorskip("ray")
    code = main(["tune", "vision", "--models", "resnet", "--trials", "3", "--epochs", "1", "--seeds", "1",
                 *where, "--out", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err[-2000:]
    (found,) = studies(tmp_path).values()
    assert len(counted(found)) == 3 and len({t.number for t in found}) == len(found)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in found)


def test_compare_picks_equally_tuned_rows(tuned, capsys):
    out, _, _ = tuned
    assert main(["compare", "digits", "vit", "resnet", "--out", str(out)]) == 0  # the one tuning both have
    assert "tuning tpe-3" in capsys.readouterr().out
    # the published records have both: the defaults unless --tuning says otherwise
    assert main(["compare", "dates", "transformer", "lstm_seq2seq"]) == 0
    default = capsys.readouterr().out
    assert main(["compare", "dates", "transformer", "lstm_seq2seq", "--tuning", "tpe-8"]) == 0
    tuned_text = capsys.readouterr().out
    assert "tuning tpe-8" in tuned_text and "tuning" not in default.splitlines()[0]
    assert tuned_text != default
