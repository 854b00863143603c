"""Two small gymnasium environments for offline RL, registered with gymnasium when this module is
imported (``tasks.rl.dataset`` imports it, so ``gym.make("KeyToDoor-v0")`` works after
``import tasks.rl.dataset``). numpy and gymnasium only; without gymnasium, importing it raises
``tasks.rl._gym``'s DatasetError, so only what uses the environments imports it. All randomness
comes from ``self.np_random``, seeded by ``reset(seed=...)``, so an episode is a function of its
reset seed and its actions.

KeyToDoor-v0
============

The credit-assignment task of the Decision Transformer paper (Chen et al. 2021, sec. 5.4; from
Mesnard et al. 2020, "Counterfactual credit assignment"): three phases in three rooms, each a
``KEY_TO_DOOR_GRID`` x ``KEY_TO_DOOR_GRID`` (3 x 3) grid.

1. Key room, ``KEY_STEPS`` = 8 steps: the agent starts at a random cell, the key at another random
   cell; stepping onto the key picks it up (it disappears).
2. Distractor room, ``DISTRACTOR_STEPS`` = 4 steps: the agent is put at a random cell of an empty
   room.
3. Door room, ``DOOR_STEPS`` = 8 steps: the agent is put at a random cell, the door at another random
   cell; stepping onto the door ends the episode (``terminated``) with reward 1 if the key was picked
   up in phase 1, else 0.

No other reward. The episode is truncated after ``T`` = 8 + 4 + 8 = 20 steps (the registered
``max_episode_steps``), so a context of K = 20 steps covers a whole episode. A phase change happens
after the step that uses up the phase's last step: the observation that step returns is already
in the next room.

Actions (``Discrete(4)``): 0 up (row - 1), 1 down (row + 1), 2 left (col - 1), 3 right (col + 1); a
move into a wall stays put.

Observation (``Box(0, 1, (11,), float32)``):

=====  ==========================================================================================
index  meaning
=====  ==========================================================================================
0-2    phase one-hot (key room, distractor room, door room)
3, 4   the agent's row and column, divided by GRID - 1 (so in [0, 1])
5      1 while the key is visible: phase 1 and not yet picked up; else 0
6, 7   the key's row and column / (GRID - 1) while it is visible; else 0
8, 9   the door's row and column / (GRID - 1) in phase 3; else 0
10     t / T, t the number of steps taken so far
=====  ==========================================================================================

The key is not observed after the first room, and nothing in phases 2-3 says whether it was picked
up: the reward at the door depends on an action taken 5-19 steps earlier. ``info`` carries
``phase`` (0, 1, 2) and ``has_key`` for debugging; the datasets do not store it.

Why these sizes: the worst-case Manhattan distance in a 3 x 3 room is 4, half of the 8 steps of a
room, so walking straight to the key and then straight to the door succeeds in every episode, and a
policy that wastes a few moves still does. A uniform random walk (the paper's behaviour data) reaches
a target from a random other cell within 8 steps with probability ``random_walk_hit_probability(3,
8)`` = 0.4150, so it succeeds (key in phase 1 *and* door in phase 3) with probability 0.4150^2 =
0.1722 exactly (``key_to_door_random_success()``). Measured: 17.45% (1745 successes of 10000
episodes) in ``make_dataset("KeyToDoor-v0", "random")``, the default random dataset (seed 0). The
medium policy (random walk in phase 1 only) succeeds with probability 0.415.

A first design had rooms of 5, 10 and 5 steps (random-walk success 8.9%): no slack in the key room,
where the distance can be 4. The Decision Transformer, conditioned on a return of 1, then picked up
the key in 64% of its episodes (and always reached the door when it had it): 61 normalised over 200
episodes with 10k random walks, against 100 with the rooms above (seed 0, 1000 steps).

LuckyGamble-v0
==============

After Paster et al. 2022, "You Can't Count on Luck: Why Decision Transformers and RvS Fail in
Stochastic Environments". ``LUCKY_GAMBLE_STEPS`` = 10 steps, truncated at 10; the observation is
``[t / 10]`` (``Box(0, 1, (1,), float32)``); two actions: 0 = safe, reward +1 always; 1 = gamble,
reward +4 with probability 0.2 else -1 (mean 0; drawn from ``self.np_random``). Never terminates.

The best policy plays safe every step: return 10 exactly (a gamble costs 1 in expectation). A uniform
random policy averages 5. By exact enumeration (``lucky_gamble_random_returns()``; each step is +1
with probability 1/2, +4 with 1/10, -1 with 2/5):

- 17.37% of uniform-random episodes (217153373 / 1250000000 = 0.17372) reach a return >= 10, and
  99.44% of those gambled at least once: only the all-safe episode (1/1024 = 0.098% of all episodes)
  reaches 10 without a gamble;
- the top 10% by return (returns >= 12 and part of the returns of 11; ties shared in proportion) are
  100% gambling episodes: no return above 10 is possible without a winning gamble.

So filtering random data for its best returns (%BC, return filtering) keeps almost only lucky gamblers,
and a model conditioned on a return of 10 or more has seen it after gambles: it learns to gamble,
whose real mean return is below that of playing safe. That is the failure this environment exposes.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb
from typing import Any

import numpy as np

from ._gym import require_gym

gym = require_gym()  # this module is imported only where an RL task needs its environments
spaces = gym.spaces

# ----------------------------------------------------------------------------------------------
# KeyToDoor-v0
# ----------------------------------------------------------------------------------------------

KEY_TO_DOOR_ID = "KeyToDoor-v0"
KEY_TO_DOOR_GRID = 3
KEY_STEPS, DISTRACTOR_STEPS, DOOR_STEPS = 8, 4, 8
KEY_TO_DOOR_STEPS = KEY_STEPS + DISTRACTOR_STEPS + DOOR_STEPS  # T = 20
KEY_TO_DOOR_OBS_DIM = 11
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right as (d row, d col)


class KeyToDoorEnv(gym.Env):
    """Key-to-door, three rooms of 3 x 3 (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    grid = KEY_TO_DOOR_GRID
    phase_steps = (KEY_STEPS, DISTRACTOR_STEPS, DOOR_STEPS)
    max_steps = KEY_TO_DOOR_STEPS

    def __init__(self, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, shape=(KEY_TO_DOOR_OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        # phase boundaries: phase 1 is t < KEY_STEPS, phase 2 t < KEY_STEPS + DISTRACTOR_STEPS, else 3
        self._ends = (self.phase_steps[0], self.phase_steps[0] + self.phase_steps[1], self.max_steps)
        self._t = 0
        self._phase = 0
        self._pos = (0, 0)
        self._key = (0, 0)
        self._door = (0, 0)
        self._starts: tuple[tuple[int, int], ...] = ((0, 0), (0, 0), (0, 0))
        self._has_key = False
        self._over = True

    def _cell(self, index: int) -> tuple[int, int]:
        return divmod(int(index), self.grid)

    def _two_cells(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Two different cells, uniformly (the second uniform over the cells other than the first)."""
        n = self.grid * self.grid
        first = int(self.np_random.integers(n))
        second = (first + 1 + int(self.np_random.integers(n - 1))) % n
        return self._cell(first), self._cell(second)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # the whole layout is drawn now (the same draws whatever the actions): key-room start and key,
        # distractor-room start, door-room start and door
        start1, self._key = self._two_cells()
        start2 = self._cell(self.np_random.integers(self.grid * self.grid))
        start3, self._door = self._two_cells()
        self._starts = (start1, start2, start3)
        self._t, self._phase, self._pos = 0, 0, start1
        self._has_key, self._over = False, False
        return self._obs(), self._info()

    def step(self, action):
        if self._over:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        a = int(action)
        if not 0 <= a < 4:
            raise ValueError(f"invalid action {action!r}; expected 0..3")
        d_row, d_col = MOVES[a]
        last = self.grid - 1
        self._pos = (min(max(self._pos[0] + d_row, 0), last), min(max(self._pos[1] + d_col, 0), last))
        self._t += 1
        reward, terminated = 0.0, False
        if self._phase == 0 and not self._has_key and self._pos == self._key:
            self._has_key = True
        elif self._phase == 2 and self._pos == self._door:
            terminated = True
            reward = 1.0 if self._has_key else 0.0
        if not terminated and self._phase < 2 and self._t >= self._ends[self._phase]:
            self._phase += 1  # into the next room, at its random start cell
            self._pos = self._starts[self._phase]
        truncated = not terminated and self._t >= self.max_steps
        self._over = terminated or truncated
        return self._obs(), reward, terminated, truncated, self._info()

    def _obs(self) -> np.ndarray:
        scale = float(self.grid - 1)
        obs = np.zeros(KEY_TO_DOOR_OBS_DIM, dtype=np.float32)
        obs[self._phase] = 1.0
        obs[3], obs[4] = self._pos[0] / scale, self._pos[1] / scale
        if self._phase == 0 and not self._has_key:
            obs[5] = 1.0
            obs[6], obs[7] = self._key[0] / scale, self._key[1] / scale
        if self._phase == 2:
            obs[8], obs[9] = self._door[0] / scale, self._door[1] / scale
        obs[10] = self._t / self.max_steps
        return obs

    def _info(self) -> dict[str, Any]:
        return {"phase": self._phase, "has_key": self._has_key}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rows = []
        for r in range(self.grid):
            row = ""
            for c in range(self.grid):
                if (r, c) == self._pos:
                    row += "A"
                elif self._phase == 0 and not self._has_key and (r, c) == self._key:
                    row += "K"
                elif self._phase == 2 and (r, c) == self._door:
                    row += "D"
                else:
                    row += "."
            rows.append(row)
        return f"phase {self._phase + 1} t={self._t}\n" + "\n".join(rows)


def random_walk_hit_probability(grid: int = KEY_TO_DOOR_GRID, steps: int = KEY_STEPS) -> float:
    """The probability that a uniform random walk on a ``grid`` x ``grid`` room (4 moves, a move into
    a wall stays put) steps onto a target within ``steps`` steps, from a uniformly random start other
    than the target and a uniformly random target. Exact (dynamic programming over the cells)."""
    n = grid * grid
    total = 0.0
    for target in range(n):
        for start in range(n):
            if start == target:
                continue
            p = np.zeros(n)
            p[start] = 1.0
            hit = 0.0
            for _ in range(steps):
                q = np.zeros(n)
                for cell in np.flatnonzero(p):
                    r, c = divmod(int(cell), grid)
                    for d_row, d_col in MOVES:
                        nxt = min(max(r + d_row, 0), grid - 1) * grid + min(max(c + d_col, 0), grid - 1)
                        q[nxt] += p[cell] / 4.0
                hit += q[target]
                q[target] = 0.0  # absorbed
                p = q
            total += hit
    return total / (n * (n - 1))


def key_to_door_random_success() -> float:
    """The success rate (reward 1) of a uniform random walk on KeyToDoor-v0: it must step onto the
    key in phase 1 and onto the door in phase 3 (the phases are independent)."""
    return (random_walk_hit_probability(KEY_TO_DOOR_GRID, KEY_STEPS)
            * random_walk_hit_probability(KEY_TO_DOOR_GRID, DOOR_STEPS))


# ----------------------------------------------------------------------------------------------
# LuckyGamble-v0
# ----------------------------------------------------------------------------------------------

LUCKY_GAMBLE_ID = "LuckyGamble-v0"
LUCKY_GAMBLE_STEPS = 10
SAFE_REWARD = 1.0
GAMBLE_WIN, GAMBLE_LOSS, GAMBLE_WIN_PROBABILITY = 4.0, -1.0, 0.2


class LuckyGambleEnv(gym.Env):
    """Ten steps of "safe (+1)" or "gamble (+4 w.p. 0.2, else -1)" (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    max_steps = LUCKY_GAMBLE_STEPS

    def __init__(self, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = None
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._t = 0
        self._over = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t, self._over = 0, False
        return self._obs(), {}

    def step(self, action):
        if self._over:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        a = int(action)
        if a == 0:
            reward = SAFE_REWARD
        elif a == 1:
            reward = GAMBLE_WIN if self.np_random.random() < GAMBLE_WIN_PROBABILITY else GAMBLE_LOSS
        else:
            raise ValueError(f"invalid action {action!r}; expected 0 (safe) or 1 (gamble)")
        self._t += 1
        truncated = self._t >= self.max_steps
        self._over = truncated
        return self._obs(), reward, False, truncated, {}

    def _obs(self) -> np.ndarray:
        return np.array([self._t / self.max_steps], dtype=np.float32)


def lucky_gamble_random_returns(steps: int = LUCKY_GAMBLE_STEPS) -> dict[int, tuple[Fraction, Fraction]]:
    """Exact return distribution of the uniform random policy on LuckyGamble: ``{return: (P(return),
    P(return and at least one gamble))}``. Each step is +1 w.p. 1/2, +4 w.p. 1/10, -1 w.p. 2/5."""
    p_safe, p_win, p_loss = Fraction(1, 2), Fraction(1, 10), Fraction(2, 5)
    dist: dict[int, tuple[Fraction, Fraction]] = {}
    for wins in range(steps + 1):
        for losses in range(steps + 1 - wins):
            safe = steps - wins - losses
            p = comb(steps, wins) * comb(steps - wins, losses) * p_win ** wins * p_loss ** losses * p_safe ** safe
            ret = safe + 4 * wins - losses
            total, gambled = dist.get(ret, (Fraction(0), Fraction(0)))
            dist[ret] = (total + p, gambled + (p if wins + losses else Fraction(0)))
    return dict(sorted(dist.items()))


def lucky_gamble_top_share_gambling(top: Fraction = Fraction(1, 10),
                                    steps: int = LUCKY_GAMBLE_STEPS) -> Fraction:
    """The share of gambling episodes among the best ``top`` (a probability mass) of uniform-random
    episodes by return; episodes tied at the cut count in proportion."""
    remaining, gambled = Fraction(top), Fraction(0)
    for _, (p, g) in sorted(lucky_gamble_random_returns(steps).items(), reverse=True):
        take = min(p, remaining)
        gambled += g * take / p
        remaining -= take
        if remaining == 0:
            break
    return gambled / top


# ----------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------

REGISTERED = {
    KEY_TO_DOOR_ID: ("tasks.rl.envs:KeyToDoorEnv", KEY_TO_DOOR_STEPS),
    LUCKY_GAMBLE_ID: ("tasks.rl.envs:LuckyGambleEnv", LUCKY_GAMBLE_STEPS),
}


def register_envs() -> None:
    """Register both environments with gymnasium (idempotent: an id already registered is left)."""
    for env_id, (entry_point, max_episode_steps) in REGISTERED.items():
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)


register_envs()
