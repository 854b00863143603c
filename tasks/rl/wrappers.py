"""The gymnasium wrappers that offline-RL tasks put around their environments: ``DelayedReward`` (the
``-delayed`` tasks of ``tasks.rl.tasks``) and ``ActionAdapter`` (``tasks.rl.minari``). They subclass
gymnasium's wrappers, so this module needs gymnasium when it is imported (``tasks.rl._gym``'s
DatasetError without it); the tasks import it only when they make an environment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._gym import require_gym

gym = require_gym()


class DelayedReward(gym.Wrapper):
    """The DT paper's delayed-return setting: reward 0 at every step and the episode's whole return at
    its last step (termination or truncation). The episode's return is unchanged."""

    def reset(self, **kwargs: Any) -> Any:
        self.pending = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.pending += float(reward)
        if not (terminated or truncated):
            return obs, 0.0, terminated, truncated, info
        total, self.pending = self.pending, 0.0
        return obs, total, terminated, truncated, info


class ActionAdapter(gym.ActionWrapper):
    """The task's actions -> the environment's: ``+ start`` for ``Discrete``, a reshape for n-D ``Box``."""

    def __init__(self, env: gym.Env, space: gym.Space) -> None:
        super().__init__(env)
        self._space = space
        if isinstance(space, gym.spaces.Discrete):
            self.action_space = gym.spaces.Discrete(int(space.n))
        else:
            self.action_space = gym.spaces.Box(space.low.reshape(-1), space.high.reshape(-1), dtype=space.dtype)

    def action(self, action: Any) -> Any:
        if isinstance(self._space, gym.spaces.Discrete):
            return int(action) + int(self._space.start)
        return np.asarray(action, dtype=self._space.dtype).reshape(self._space.shape)
