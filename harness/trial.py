"""One tuning trial, in whichever process runs it (this one, a ``--jobs`` worker, a Ray task): ask the
study for a configuration, train it on the tuning seed under the sweep's budget while the validation
curve goes to the pruner, and tell the study how it ended. The test split is never evaluated here.

The search space is one rule for every model (:func:`search_space`), centred on what the model
registers (its ``lr``) and what it has (a ``dropout`` in its size preset):

==============  ================================================================================
lr              log-uniform over [lr0 / 10, 10 * lr0], lr0 the model's registered learning rate
weight_decay    uniform over [0, 0.3] (AdamW; decays matrices and embeddings only)
warmup_frac     uniform over [0, 0.3]: the share of the steps with a linear warm-up (then cosine)
dropout         uniform over [0, 0.5], where the model's size preset has a ``dropout`` key
==============  ================================================================================

The first trial of every study is the model's defaults (enqueued by ``harness.tune``), so the tuned
configuration is never worse than the default on the tuning seed's validation metric.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from tasks.base import Task
from zoo.core import attention_backend
from zoo.registry import ModelEntry, get_model_entry

from .config import RunConfig, resolve
from .trainer import CellTrainer, TrainingDiverged

TRIAL_SEED = 10_000  # every trial trains with this seed: apart from the sweep's seeds 0, 1, 2, ...
SAMPLER_SEED = 0
STARTUP_TRIALS = 4  # TPE samples at random, and the pruner prunes nothing, until this many trials finished
PRUNE_AFTER = 0.25  # no trial is pruned before this share of its steps
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that count towards --trials
LR_RANGE = 10.0  # lr: a decade each side of the model's default
WEIGHT_DECAY = (0.0, 0.3)
WARMUP_FRAC = (0.0, 0.3)
DROPOUT = (0.0, 0.5)


@dataclass(frozen=True)
class TrialSlot:
    """What a process needs to run one trial of a study: where the study is, and which counted trial
    this is (its sampler seed, so that a tune run one trial at a time is reproducible)."""

    study: str
    storage: str  # an SQLAlchemy URL: sqlite:////abs/path/tuning.db (or a server's, for a Ray cluster)
    slot: int  # 0 for the study's first counted trial, 1 for the next, ...
    number: int | None = None  # a trial the driver already started (the defaults'); None: ask for a new one


def storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url``; SQLite waits up to a minute for a lock (parallel trials)."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def sampler(slot: int = 0) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=SAMPLER_SEED * 1_000_003 + slot, n_startup_trials=STARTUP_TRIALS)


def pruner(total_steps: int) -> optuna.pruners.MedianPruner:
    """Prune a trial whose validation metric is worse than the median of the earlier trials at the same
    step, once STARTUP_TRIALS have finished and PRUNE_AFTER of the budget has passed."""
    return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=int(total_steps * PRUNE_AFTER))


def describe() -> dict[str, Any]:
    """How trials are sampled and pruned, for the records (and the study's identity)."""
    return {"sampler": f"TPESampler(seed={SAMPLER_SEED} + slot, n_startup_trials={STARTUP_TRIALS})",
            "pruner": f"MedianPruner(n_startup_trials={STARTUP_TRIALS}, n_warmup_steps={PRUNE_AFTER} of the steps)",
            "trial_seed": TRIAL_SEED, "objective": "the validation metric at the end of the budget"}


def search_space(entry: ModelEntry, config: RunConfig) -> dict[str, BaseDistribution]:
    """The space of ``entry`` (see the module's table); dropout only where the size preset has one."""
    lr0 = entry.training_defaults(config.size).get("lr", 1e-3)
    space: dict[str, BaseDistribution] = {
        "lr": FloatDistribution(lr0 / LR_RANGE, lr0 * LR_RANGE, log=True),
        "weight_decay": FloatDistribution(*WEIGHT_DECAY),
        "warmup_frac": FloatDistribution(*WARMUP_FRAC),
    }
    if "dropout" in (entry.presets or {}).get(config.size, {}):
        space["dropout"] = FloatDistribution(*DROPOUT)
    return space


def default_params(entry: ModelEntry, task: Task, config: RunConfig) -> dict[str, float]:
    """The model's defaults, as a point of its space (the first trial of every study)."""
    defaults = entry.training_defaults(config.size)
    params = {"lr": defaults.get("lr", 1e-3), "weight_decay": defaults.get("weight_decay", 0.0),
              "warmup_frac": defaults.get("warmup_frac", task.budget.warmup_frac)}
    if "dropout" in search_space(entry, config):
        params["dropout"] = float(entry.config(config.size, dict(config.model_opts))["dropout"])
    return params


def apply(config: RunConfig, params: dict[str, float], tuning: str = "default") -> RunConfig:
    """``config`` with a point of the space: the optimiser's settings, the warm-up and the dropout."""
    model_opts = dict(config.model_opts)
    if "dropout" in params:
        model_opts["dropout"] = params["dropout"]
    return replace(config, lr=params["lr"], weight_decay=params["weight_decay"], warmup_frac=params["warmup_frac"],
                   model_opts=tuple(model_opts.items()), tuning=tuning)


def started(study: optuna.Study, backend: optuna.storages.BaseStorage, number: int) -> optuna.trial.Trial:
    """Trial ``number`` of ``study`` (in ``backend``), which the driver started: no two workers take it."""
    study_id = backend.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, backend.get_trial_id_from_study_id_trial_number(study_id, number))


def run_trial(task: Task, model: str, config: RunConfig, slot: TrialSlot, progress: bool = False) -> dict[str, Any] | None:
    """Ask, train, tell. Returns what happened: ``status`` 'ok' for a complete or pruned trial, 'failed'
    with the reason otherwise. A stop request (StopRequested) propagates, the trial told FAIL: not
    counted, so the next run trains that trial again."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    entry = get_model_entry(model)
    metric = f"val_{task.metric}"
    backend = storage(slot.storage)
    study = optuna.load_study(study_name=slot.study, storage=backend, sampler=sampler(slot.slot),
                              pruner=pruner(resolve(task, entry, config)["total_steps"]))
    trial = study.ask(search_space(entry, config)) if slot.number is None else started(study, backend, slot.number)
    trainer = CellTrainer(task, entry, TRIAL_SEED, apply(config, trial.params))  # no checkpoint: a stopped trial is redone

    def observe(row: dict[str, Any]) -> None:
        trial.report(row[metric], row["step"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {row['step']}")

    trainer.observe = observe
    outcome: dict[str, Any] = {"status": "ok", "trial": trial.number, "params": trial.params}
    value: float | None = None
    try:
        trainer.setup()
        with attention_backend(config.backend):
            trainer.train(progress)
        state, value = TrialState.COMPLETE, trainer.state.history[-1][metric]
    except optuna.TrialPruned:
        state = TrialState.PRUNED
        outcome["value"] = trainer.state.history[-1][metric]
    except TrainingDiverged as e:  # a finished trial with the worst outcome: counted, like a pruned one
        state = TrialState.PRUNED
        trial.set_user_attr("diverged", str(e))
        outcome["diverged"] = str(e)
    except KeyboardInterrupt:  # a stop request (StopRequested) or a second Ctrl-C: not counted, redone next time
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as e:  # noqa: BLE001 - the trial failed; the tune says why and counts it missing
        state = TrialState.FAIL
        outcome.update(status="failed", reason=f"{type(e).__name__}: {e}".strip()[:2000])
        trial.set_user_attr("error", outcome["reason"])
    trial.set_user_attr("train_time_s", trainer.state.train_time)
    study.tell(trial, value, state=state)
    return {"value": value, **outcome, "state": state.name, "train_time_s": trainer.state.train_time}
