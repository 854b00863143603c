"""Tuning parity: ``python -m harness tune DOMAIN --trials N`` (or ``run DOMAIN --tune N``).

For every (task, model, size) of the sweep an Optuna study searches the model's space
(``harness.trial.search_space``: one rule for every model) with a seeded TPE sampler and a median
pruner on the validation curve. Every model of a task gets the same number of counted trials (complete
or pruned; a diverged trial counts as pruned) under the sweep's budget, on the tuning seed, and is
selected on the validation metric alone: no trial evaluates the test split. The first trial is the
model's defaults (started by the driver, so that parallel workers never race for it). The best of the first N counted trials then trains on the sweep's seeds like any cell,
with ``tuning`` = 'tpe-N' in its record and leaderboard row, and the study (space, sampler, trials,
chosen values) in its record under ``tuned``.

The studies live in one database: ``--out``/tuning.db (Optuna's RDB storage on SQLite), or
``--storage URL`` (e.g. PostgreSQL, for a Ray cluster whose nodes do not share --out). A study's name
is ``task/model/size/<hash>``, the hash covering the cell's configuration, the data, the space and how
trials are sampled, so that another budget is another study. A rerun runs only the missing trials: the
finished ones are kept, and those a killed tune left running are marked failed and not counted. A
tune holds ``--out``/tuning.lock while it runs, so two tunes of one --out take turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from tasks.base import Task
from zoo.registry import get_model_entry

from . import executors, trial as trials
from .config import RunConfig, resolve
from .errors import UsageError
from .options import RunOptions
from .plan import Plan
from .records import config_hash, file_lock
from .schema import finite

DB_NAME = "tuning.db"
LOCK_NAME = "tuning.lock"


def label(n_trials: int) -> str:
    """The ``tuning`` column of a row tuned with ``n_trials`` trials: 'tpe-8'."""
    return f"tpe-{n_trials}"


def default_storage(out: Path) -> str:
    """The studies' database under --out: sqlite:///OUT/tuning.db."""
    return f"sqlite:///{(Path(out) / DB_NAME).resolve()}"


def storage_url(args: RunOptions) -> str:
    return args.storage or default_storage(args.out)


def check_storage(args: RunOptions) -> None:
    """The studies' database opens (before any training): a URL of no known kind, a folder that does not
    exist, or a file that is not a database is a one-line UsageError naming it. A damaged default
    database is not replaced: its finished trials may be all that is left of hours of tuning."""
    url = storage_url(args)
    try:
        trials.storage(url)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors, a missing driver: all bad input here
        reason = " ".join(str(getattr(e, "orig", None) or e).split())[:200] or type(e).__name__
        path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
        where = f"--storage {url}" if args.storage else str(path)
        hint = ("; move the file aside to start the studies afresh, or give another --storage"
                if path is not None and path.is_file() else "")
        raise UsageError(f"{where}: cannot open it as the studies' database ({type(e).__name__}: {reason})"
                         f"{hint}") from None


def check_args(args: RunOptions) -> None:
    """Flags that would fix what tuning chooses, or run trials where they cannot be, are refused."""
    fixed = [flag for flag, value in (("--lr", args.lr), ("--weight-decay", args.weight_decay)) if value is not None]
    fixed += ["--model-opt dropout"] if any(k == "dropout" for k, _ in args.model_opt) else []
    if fixed:
        raise UsageError(f"{', '.join(fixed)}: tuning chooses it (learning rate, weight decay, warm-up and dropout); "
                         f"drop it, or drop --tune")
    if args.ddp:
        raise UsageError("--tune runs its trials through --jobs or --executor ray, not --ddp")


@dataclass
class Study:
    """One model's study on one task: its name in the storage and what it searches."""

    task: Task
    model: str
    base: RunConfig  # the sweep's configuration of the model (defaults for what is tuned)
    name: str
    space: dict[str, BaseDistribution]
    defaults: dict[str, float]
    study: optuna.Study

    def counted(self) -> list[FrozenTrial]:
        """The trials that count (complete or pruned), first finished first."""
        return sorted(self.study.get_trials(deepcopy=False, states=trials.COUNTED), key=lambda t: t.number)

    def fail_stale(self) -> None:
        """Trials left running (a killed tune, a worker that died) are failed: not counted, so redone."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)

    def start_defaults(self) -> int | None:
        """The defaults' trial, started here (so that parallel workers never race for an enqueued one):
        its number, or None where the defaults were already tried."""
        if any(t.user_attrs.get("default") for t in self.study.get_trials(deepcopy=False, states=trials.COUNTED)):
            return None
        self.study.enqueue_trial(self.defaults, user_attrs={"default": True})
        return self.study.ask(self.space).number


def open_study(task: Task, model: str, base: RunConfig, url: str) -> Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tune prints its own line per trial
    entry = get_model_entry(model)
    space = trials.search_space(entry, base)
    identity = {**resolve(task, entry, base), "space": {k: optuna.distributions.distribution_to_json(d)
                                                         for k, d in space.items()}, **trials.describe()}
    name = f"{task.name}/{model}/{base.label}/{config_hash(identity)}"
    study = optuna.create_study(study_name=name, storage=trials.storage(url), load_if_exists=True,
                                direction="maximize" if task.higher_is_better else "minimize")
    return Study(task, model, base, name, space, trials.default_params(entry, task, base), study)


def _value(t: FrozenTrial) -> float | None:
    """A trial's validation metric: its final value, or a pruned trial's last reported one."""
    if t.value is not None:
        return t.value
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def chosen(study: Study, n_trials: int) -> FrozenTrial:
    """The best complete trial among the first ``n_trials`` counted (ties: the earlier trial)."""
    complete = [t for t in study.counted()[:n_trials] if t.state == TrialState.COMPLETE and finite(t.value)]
    if not complete:
        raise RuntimeError("no trial completed (every one was pruned or diverged)")
    sign = -1.0 if study.study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * t.value, t.number))



def details(study: Study, best: FrozenTrial, n_trials: int, url: str, default_url: str) -> dict[str, Any]:
    """What a tuned record keeps of its study: the space, the sampler, every counted trial, the choice."""
    history = [{"trial": t.number, "state": t.state.name, "value": _value(t), "params": t.params,
                "default": bool(t.user_attrs.get("default")), **({"diverged": True} if "diverged" in t.user_attrs else {})}
               for t in study.counted()[:n_trials]]
    return {"tuning": label(n_trials), "study": study.name, "storage": DB_NAME if url == default_url else url,
            "trials": n_trials, **trials.describe(),
            "space": {k: {"low": d.low, "high": d.high, "log": d.log} for k, d in study.space.items()},
            "defaults": study.defaults, "chosen": best.params, "chosen_trial": best.number,
            "chosen_value": best.value, "history": history}


def trial_line(study: Study, outcome: dict[str, Any]) -> str:
    metric = f"val_{study.task.metric}"
    shown = ", ".join(f"{k} {v:.3g}" for k, v in outcome.get("params", {}).items())
    if outcome["status"] != "ok":
        return f"{study.task.name}/{study.model} trial {outcome.get('trial', '?')}: FAILED ({outcome['reason'][:300]})"
    value = "diverged" if outcome.get("diverged") else f"{metric} {outcome['value']:.4f}"
    return (f"{study.task.name}/{study.model} trial {outcome['trial']}: {outcome['state'].lower()}, {value} "
            f"({shown}; {outcome.get('train_time_s', 0.0):.1f} s)")


def tune_plan(plan: Plan, threads: int | None) -> int:
    """Run every study of ``plan`` to ``--tune`` counted trials, then set each model's configuration to
    its study's choice (``plan.configs``, ``plan.tuned``). 0 when every study has its trials, 1 when
    some trials failed (nothing trains on the seeds then), 130 when stopped."""
    args = plan.options
    n_trials, url = args.tune, storage_url(args)
    with file_lock(Path(args.out) / LOCK_NAME):
        studies = {(name, model): open_study(task, model, plan.configs[name, model], url)
                   for name, task in plan.tasks.items() for model in plan.models[name]}
        cells = []
        for s in studies.values():
            s.fail_stale()
            done = len(s.counted())
            defaults = s.start_defaults() if done < n_trials else None
            cells += [_trial_cell(plan, s, k, url, threads, defaults if k == done else None)
                      for k in range(done, n_trials)]
        plan.log(f"harness: tuning {len(studies)} model(s) alike ({n_trials} trials each, {label(n_trials)}; studies "
                 f"in {url}); {len(cells)} trial(s) to run")
        code = _run_trials(plan, studies, cells)
        for s in studies.values():
            s.fail_stale()  # a worker that died left its trial running
        if code:
            return code
        return _choose(plan, studies, n_trials, url)


def _trial_cell(plan: Plan, study: Study, slot: int, url: str, threads: int | None,
                number: int | None) -> executors.Cell:
    args = plan.options
    return executors.Cell(study.task.name, executors.task_kwargs(study.task, args.data_dir, args.download),
                          study.model, trials.TRIAL_SEED, study.base, plugins=tuple(args.plugin), threads=threads,
                          trial=trials.TrialSlot(study.name, url, slot, number))


def _run_trials(plan: Plan, studies: dict[tuple[str, str], Study], cells: list[executors.Cell]) -> int:
    """Run the trials through the sweep's own executor (``executors.run_cells``)."""
    args = plan.options
    failed, count = [], iter(range(1, len(cells) + 1))

    def each(cell: executors.Cell, outcome: dict[str, Any] | None, _: str) -> None:
        i = next(count)
        if outcome is not None:
            failed.extend([cell] if outcome["status"] != "ok" else [])
            plan.log(f"[tune {i}/{len(cells)}] " + trial_line(studies[cell.task, cell.model], outcome))

    if not executors.run_cells(cells, plan.tasks, args, each):
        plan.log(f"\nharness: tuning interrupted; the finished trials are kept in {storage_url(args)} "
                 f"(rerun the same command: it runs only the missing trials)")
        return 130
    if failed:
        plan.log(f"harness: {len(failed)} trial(s) failed (see above); nothing trains on the seeds until every model "
                 f"has its {args.tune} trials: fix the cause and rerun (only the missing trials run)")
        return 1
    return 0


def _choose(plan: Plan, studies: dict[tuple[str, str], Study], n_trials: int, url: str) -> int:
    """Each model's configuration becomes its study's choice."""
    default_url = default_storage(plan.options.out)
    for (task, model), s in studies.items():
        try:
            best = chosen(s, n_trials)
        except RuntimeError as e:
            plan.log(f"harness: {task}/{model}: {e}; it cannot be tuned with this budget")
            return 1
        plan.configs[task, model] = trials.apply(s.base, best.params, label(n_trials))
        plan.tuned[task, model] = details(s, best, n_trials, url, default_url)
        value = f"val_{s.task.metric} {best.value:.4f}"
        shown = ", ".join(f"{k} {v:.3g}" for k, v in best.params.items())
        default = " (the defaults)" if best.user_attrs.get("default") else ""
        plan.log(f"harness: {task}/{model}: trial {best.number} chosen{default}: {shown}; {value}")
    return 0
