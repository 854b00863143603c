"""Why the Decision Transformer loses to BC on pendulum-mixed: it copies the actions in its context.

Trains the DT and BC as one cell of the published RL run does (tiny size, the task's budget, one
seed), then measures on fresh expert and medium episodes (environment seeds the dataset never saw):

- teacher-forced: each model's mean squared error against the behaviour's actions, its context
  holding the behaviour's true history (states, actions and the episode's true returns to go);
- the same error for simply repeating the previous action, and for predicting 0;
- rolled out: the DT's normalised return when asked for the published target, and when asked, from
  each start, for exactly the return the expert got from it.

    python scripts/rl_copycat.py [--seed 0] [--episodes 10] [--data-dir data]

About two minutes on 2 CPU cores. The numbers go into tasks/rl/tasks.py's FINDINGS and the issue-18 note.
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
from zoo.registry import get_model_entry  # noqa: E402

TASK, MODELS, FIRST_SEED = "pendulum-mixed", ("decision_transformer", "bc_mlp"), 50_000


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


@torch.no_grad()
def teacher_forced_mse(task, model, states, actions, rewards) -> float:
    """The model's error on every step of one episode, its K-step context the episode's own history."""
    K, scale = task.opts["context_len"], task.env_info["return_scale"]
    s = torch.from_numpy((states - task.state_mean) / task.state_std)
    a = torch.from_numpy(task._scale(actions))
    rtg = torch.from_numpy(np.cumsum(rewards[::-1])[::-1].copy() / scale).float()[:, None]
    steps = torch.arange(len(rewards))
    pos = steps[:, None] - (K - 1) + torch.arange(K)  # (T, K): the window ending at each step
    mask = pos >= 0
    index = pos.clamp(min=0)
    pred = model(rtg[index] * mask[..., None], s[index] * mask[..., None], a[index] * mask[..., None],
                 steps[index] * mask, mask)[:, -1]
    return float(((pred - a) ** 2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=10, help="fresh behaviour episodes per policy")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    task = create_task(TASK, data_dir=args.data_dir)
    task.setup()
    trained = {}
    for name in MODELS:
        cell = CellTrainer(task, get_model_entry(name), args.seed, RunConfig())
        cell.setup()
        cell.train(False)
        trained[name] = cell.model.eval()
        print(f"trained {name}: {cell.state.step} steps", flush=True)
    task.prepare(None)

    seeds = range(FIRST_SEED, FIRST_SEED + args.episodes)
    for label, policy in (("expert", pendulum_expert), ("medium", pendulum_medium)):
        episodes = [behaviour_episode(policy, seed) for seed in seeds]
        row = {name: np.mean([teacher_forced_mse(task, m, *ep) for ep in episodes]) for name, m in trained.items()}
        scaled = [task._scale(actions)[:, 0] for _, actions, _ in episodes]
        row["repeat previous action"] = np.mean([((a[1:] - a[:-1]) ** 2).mean() for a in scaled])
        row["predict 0"] = np.mean([(a ** 2).mean() for a in scaled])
        print(f"teacher-forced MSE on fresh {label} episodes: "
              + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))

    expert_returns = np.array([behaviour_episode(pendulum_expert, seed)[2].sum() for seed in seeds])
    dt = trained["decision_transformer"]
    for label, target in (("the published target", task.env_info["target_return"]),
                          ("each start's expert return", torch.tensor(expert_returns, dtype=torch.float32))):
        returns = task.rollout(dt, list(seeds), target)
        print(f"DT rolled out, asked for {label}: normalised {task._normalize(returns).mean():.1f} "
              f"(the expert's own: {task._normalize(expert_returns).mean():.1f})")


if __name__ == "__main__":
    main()
