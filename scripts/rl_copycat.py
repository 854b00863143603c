"""Does a trajectory model copy the actions in its context? A measurement of the trained models, not of
the data.

Trains, as one cell of the published RL run does (tiny size, the task's budget, one seed), the
Decision Transformer and the Decision-LSTM with each initialisation of their tokens and heads
(``zoo.trajectory.INITS``) and BC, on pendulum-mixed. Then, on fresh expert and medium episodes
(environment seeds the dataset never saw), teacher-forced: every step of every episode is predicted
from the K-step window that ends there, the context holding the behaviour's true history (states,
actions and the episode's true returns to go), and the mean squared error against the behaviour's
actions (scaled to [-1, 1]) is measured three ways:

- ``real``: the context as it happened;
- ``zeroed``: every action token of the context set to 0 (what the model sees of an unknown action);
- ``shuffled``: the context's action tokens taken from another window, drawn across all episodes of
  that behaviour (real-looking actions that belong to another moment).

A model that copies its context's actions gets much worse when they are zeroed or shuffled; one that
reads the state does not move. BC reads the current state only (its three errors are equal), and the
data's own "repeat the previous action" error is printed for reference (a property of the behaviour,
not of any model). The last column rolls each model out on the task's test seeds, asked for the
task's target return (normalised return).

    python scripts/rl_copycat.py [--seed 0] [--episodes 10] [--data-dir data] [--models dt,lstm,bc] [--save F.pt]

About 15 minutes on 2 busy CPU cores for the seven models. It prints its table; it is a diagnostic, and
no published claim rests on it (the claim it once backed was measured under an earlier initialisation
and was withdrawn when the default changed: run it again before quoting its numbers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import baselines  # noqa: E402,F401  (registers the baselines)
from harness.config import RunConfig  # noqa: E402
from harness.trainer import CellTrainer  # noqa: E402
from tasks.base import create_task  # noqa: E402
from tasks.rl.controllers import pendulum_expert, pendulum_medium  # noqa: E402
from tasks.rl.tasks import TEST_SEED  # noqa: E402
from zoo.registry import get_model_entry  # noqa: E402
from zoo.trajectory import INITS  # noqa: E402

TASK, FIRST_SEED = "pendulum-mixed", 50_000
TRAJECTORY_MODELS = {"dt": "decision_transformer", "lstm": "decision_lstm"}
CONTEXTS = ("real", "zeroed", "shuffled")


def behaviour_episode(policy, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states (T, 3), actions (T, 1), rewards (T,)) of ``policy`` from the environment's ``seed``."""
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=seed)
    states, actions, rewards, done = [], [], [], False
    while not done:
        action = policy(obs, None)
        states.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        done = terminated or truncated
    env.close()
    return np.array(states, np.float32), np.array(actions, np.float32), np.array(rewards)


def windows(task, episodes) -> dict[str, torch.Tensor]:
    """The K-step window ending at every step of every episode, as the model reads it: returns to go,
    states, actions (B, K, .), timesteps and mask (B, K), and the behaviour's action at the window's
    last step (B, 1), for all steps of all ``episodes`` together."""
    K, scale = task.opts["context_len"], task.env_info["return_scale"]
    parts = []
    for states, actions, rewards in episodes:
        s = torch.from_numpy((states - task.state_mean) / task.state_std)
        a = torch.from_numpy(task._scale(actions))
        rtg = torch.from_numpy(np.cumsum(rewards[::-1])[::-1].copy() / scale).float()[:, None]
        steps = torch.arange(len(rewards))
        pos = steps[:, None] - (K - 1) + torch.arange(K)  # (T, K): the window ending at each step
        mask = pos >= 0
        index = pos.clamp(min=0)
        parts.append({"rtg": rtg[index] * mask[..., None], "states": s[index] * mask[..., None],
                      "actions": a[index] * mask[..., None], "timesteps": steps[index] * mask, "mask": mask,
                      "target": a})
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


@torch.no_grad()
def context_errors(model, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
    """The mean squared error of the prediction at each window's last step, with the context's action
    tokens as they were, zeroed, and shuffled across windows (each window's own padding kept)."""
    mask = batch["mask"][..., None]
    variants = {"real": batch["actions"], "zeroed": torch.zeros_like(batch["actions"]),
                "shuffled": batch["actions"][torch.randperm(len(mask), generator=generator)] * mask}
    errors = {}
    for name, actions in variants.items():
        pred = model(batch["rtg"], batch["states"], actions, batch["timesteps"], batch["mask"])[:, -1]
        errors[name] = float(((pred - batch["target"]) ** 2).mean())
    return errors


def train(task, name: str, seed: int, init: str | None, steps: int | None) -> torch.nn.Module:
    """The model ``name`` trained as one cell of the published run (``init`` overriding its preset's)."""
    options = (("init", init),) if init else ()
    cell = CellTrainer(task, get_model_entry(name), seed, RunConfig(model_opts=options, steps=steps))
    cell.setup()
    cell.train(False)
    print(f"trained {name}{f' init={init}' if init else ''}: {cell.state.step} steps", flush=True)
    task.prepare(None)
    return cell.model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=10, help="fresh behaviour episodes per policy")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--models", default="dt,lstm,bc", help="which of dt, lstm (each init) and bc to train")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the task's budget)")
    parser.add_argument("--save", default=None, help="also save the trained models' state dicts to this .pt file")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    task = create_task(TASK, data_dir=args.data_dir)
    task.setup()
    chosen = args.models.split(",")
    trained = {f"{short} {init}": train(task, name, args.seed, init, args.steps)
               for short, name in TRAJECTORY_MODELS.items() if short in chosen for init in INITS}
    if "bc" in chosen:
        trained["bc"] = train(task, "bc_mlp", args.seed, None, args.steps)
    if args.save:
        torch.save({name: model.state_dict() for name, model in trained.items()}, args.save)

    seeds = range(FIRST_SEED, FIRST_SEED + args.episodes)
    behaviours = {"expert": [behaviour_episode(pendulum_expert, s) for s in seeds],
                  "medium": [behaviour_episode(pendulum_medium, s) for s in seeds]}
    batches = {label: windows(task, episodes) for label, episodes in behaviours.items()}
    test_seeds = list(range(TEST_SEED, TEST_SEED + task.opts["eval_episodes"]))
    header = "  ".join(f"{label} {c:>8}" for label in batches for c in CONTEXTS)
    print(f"\nteacher-forced MSE on fresh {TASK} episodes ({args.episodes} per behaviour), and the rollout\n"
          f"{'model':<16}{header}  rolled out")
    for name, model in trained.items():
        errors = [context_errors(model, batch, torch.Generator().manual_seed(0))[c]
                  for batch in batches.values() for c in CONTEXTS]
        rolled = task._normalize(task.rollout(model, test_seeds, task.target_return)).mean()
        print(f"{name:<16}" + "  ".join(f"{e:>15.4f}" for e in errors) + f"  {rolled:10.1f}")
    repeat = [np.mean([((task._scale(a)[1:] - task._scale(a)[:-1]) ** 2).mean() for _, a, _ in episodes])
              for episodes in behaviours.values()]
    cells = [f"{r:>15.4f}" if c == "real" else f"{'-':>15}" for r in repeat for c in CONTEXTS]
    print(f"{'data: a_t-1':<16}" + "  ".join(cells) + "  (repeat the previous action: the data, no model)")


if __name__ == "__main__":
    main()
