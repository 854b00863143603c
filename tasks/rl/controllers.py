"""Hand-written behaviour controllers of graded quality for three classic-control environments and
the two small environments of ``tasks.rl.envs`` (the policies that ``tasks.rl.dataset`` rolls out to
make its offline-RL datasets). numpy only.

Each environment has three behaviour policies (``CONTROLLERS[env_id][quality]``):

========================  =====================================  ======================================
environment               expert                                 medium (systematically different)
========================  =====================================  ======================================
CartPole-v1               LQR state feedback on the linearised   pushes the way the pole is rotating
(2 actions)               cart-pole, bang-bang: 500 every time   (sign of theta_dot); ignores the cart,
                                                                 which drifts off the track (~200)
Pendulum-v1               energy-pumping swing-up, LQR balance   the same law with a weak motor:
(torque in [-2, 2])       near the top (~ -130 to -150)          torque limited to 0.5 (~ -630)
MountainCarContinuous-v0  full force in the direction of the     full force by the sign of a phase-
(force in [-1, 1])        velocity (energy pumping): ~92         lagged switch; reaches the goal in
                                                                 about 70% of the episodes (~ 35)
KeyToDoor-v0              straight to the key, then straight to  the expert in phases 2-3, a random
(4 moves)                 the door: 1 every time                 walk in phase 1 (ignores the key):
                                                                 succeeds in 41.5% of the episodes
LuckyGamble-v0            always safe: 10 every time             safe with probability 0.75 (~ 7.5)
(safe / gamble)
========================  =====================================  ======================================

and ``random`` (uniform actions) everywhere (KeyToDoor: succeeds in 17.2% of the episodes; LuckyGamble:
~5). The Key-to-Door rates are exact (``tasks.rl.envs.random_walk_hit_probability``: a 3 x 3 random walk
finds a cell within 8 steps with probability 0.415, the random walk must do it twice) and measured:
41.6% and 17.2% over 2000 evaluation episodes each (``tasks.rl.dataset.evaluate_policy``, seed 0). A policy is
``fn(obs, rng) -> action`` where ``rng`` is a ``np.random.Generator`` (only ``random``, the KeyToDoor
medium in phase 1 and the LuckyGamble medium draw from it); the action is an ``int`` for the discrete
environments and a float32 array of shape ``(act_dim,)``, inside the action bounds, for the continuous
ones.

``FAMILIES``: CartPole's and Pendulum's controllers as points of parametric families (a linear
bang-bang law; the swing-up with its gains, capture angle and pump torque), with the start of the
cross-entropy-method learner whose buffer is the ``replay`` dataset (``tasks.rl.dataset``).

The controllers' gains are hard-coded constants (``lqr_gain_cartpole`` / ``lqr_gain_pendulum``
recompute them with scipy; a test checks that they agree), so a machine with or without scipy makes the
same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

Action = Union[int, np.ndarray]
Policy = Callable[[np.ndarray, np.random.Generator], Action]

# ----------------------------------------------------------------------------------------------
# CartPole-v1: obs = (x, x_dot, theta, theta_dot); action 1 pushes right with 10 N, 0 left
# ----------------------------------------------------------------------------------------------

# u = K . obs; push right when u > 0. The discrete-time LQR gain (Euler, dt = 0.02) of the cart-pole
# linearised about upright, Q = diag(1, 1, 10, 1), R = 1; ``lqr_gain_cartpole()`` recomputes it.
CARTPOLE_GAIN = (0.9097248478, 2.143326131, 30.8558825917, 7.8787292632)


def lqr_gain_cartpole(q: tuple[float, ...] = (1.0, 1.0, 10.0, 1.0), r: float = 1.0) -> np.ndarray:
    """The LQR gain ``K`` (u = K . obs, force in units of the 10 N push) of CartPole-v1 linearised about
    the upright pole: with M = m_cart + m_pole, d = l (4/3 - m_pole / M),
    theta_dd = (g theta - u / M) / d and x_dd = u / M - m_pole l theta_dd / M; discretised with Euler
    steps of 0.02 s as the environment is. Needs scipy (``CARTPOLE_GAIN`` holds the result)."""
    from scipy.linalg import solve_discrete_are

    g, m_cart, m_pole, half_length, dt = 9.8, 1.0, 0.1, 0.5, 0.02
    total = m_cart + m_pole
    d = half_length * (4.0 / 3.0 - m_pole / total)
    a = np.zeros((4, 4))
    a[0, 1] = a[2, 3] = 1.0
    a[3, 2] = g / d
    a[1, 2] = -m_pole * half_length * a[3, 2] / total
    b = np.zeros((4, 1))
    b[3, 0] = -1.0 / (total * d)
    b[1, 0] = 1.0 / total - m_pole * half_length * b[3, 0] / total
    a_d, b_d = np.eye(4) + dt * a, dt * b
    q_m, r_m = np.diag(q), np.array([[r]])
    p = solve_discrete_are(a_d, b_d, q_m, r_m)
    return -np.linalg.solve(r_m + b_d.T @ p @ b_d, b_d.T @ p @ a_d)[0]


def cartpole_expert(obs: np.ndarray, rng: np.random.Generator) -> int:
    """LQR, bang-bang: push right (1) iff ``K . (x, x_dot, theta, theta_dot) > 0`` with
    ``K = CARTPOLE_GAIN`` (~ 0.91, 2.14, 30.9, 7.88). Balances the pole and holds the cart near the
    centre: 500 (the maximum) in every episode."""
    x, x_dot, theta, theta_dot = (float(v) for v in obs)
    k = CARTPOLE_GAIN
    return int(k[0] * x + k[1] * x_dot + k[2] * theta + k[3] * theta_dot > 0.0)


def cartpole_medium(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Push right (1) iff the pole rotates to the right, ``theta_dot > 0``. It keeps the pole up but
    ignores the angle and the cart, so the cart drifts and leaves the track after 130-320 steps
    (mean ~200). It disagrees with the expert on about 38% of its own states."""
    return int(float(obs[3]) > 0.0)


def cartpole_random(obs: np.ndarray, rng: np.random.Generator) -> int:
    """0 or 1 uniformly (mean return ~22)."""
    return int(rng.integers(2))


# ----------------------------------------------------------------------------------------------
# Pendulum-v1: obs = (cos theta, sin theta, theta_dot), theta = 0 upright;
# theta_dd = 15 sin theta + 3 u; reward -(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)
# ----------------------------------------------------------------------------------------------

# u = -(K0 theta + K1 theta_dot) near the top: the discrete-time LQR gain of the pendulum linearised
# about upright with the environment's own step (semi-implicit Euler, dt = 0.05) and its own cost
# weights Q = diag(1, 0.1), R = 0.001; ``lqr_gain_pendulum()`` recomputes it.
PENDULUM_GAIN = (19.6932165507, 5.2625000753)
PENDULUM_CAPTURE = 0.5  # rad: the balancing controller takes over within this angle of upright


def lqr_gain_pendulum(q: tuple[float, float] = (1.0, 0.1), r: float = 0.001) -> np.ndarray:
    """The LQR gain ``K`` (u = -K . (theta, theta_dot)) of Pendulum-v1 about upright:
    theta_dot' = theta_dot + dt (15 theta + 3 u), theta' = theta + dt theta_dot', dt = 0.05.
    Needs scipy (``PENDULUM_GAIN`` holds the result)."""
    from scipy.linalg import solve_discrete_are

    dt = 0.05
    a = np.array([[1.0 + dt * dt * 15.0, dt], [dt * 15.0, 1.0]])
    b = np.array([[dt * dt * 3.0], [dt * 3.0]])
    q_m, r_m = np.diag(q), np.array([[r]])
    p = solve_discrete_are(a, b, q_m, r_m)
    return np.linalg.solve(r_m + b.T @ p @ b, b.T @ p @ a)[0]


def pendulum_swing_up(obs: np.ndarray, max_torque: float, gain: tuple[float, float] = PENDULUM_GAIN,
                      capture: float = PENDULUM_CAPTURE, pump: float | None = None) -> np.ndarray:
    """Energy-based swing-up with LQR balancing, torque clipped to ``[-max_torque, max_torque]``.

    With I = 1/3 and m g l / 2 = 5 the energy is ``E = theta_dot^2 / 6 + 5 (cos theta - 1)`` (0 at
    rest upright, -10 at rest at the bottom) and ``dE/dt = theta_dot * u``. Within ``capture`` rad of
    upright: ``u = -(K0 theta + K1 theta_dot)`` (``gain``, default ``PENDULUM_GAIN``); elsewhere, while
    ``E < 0``, torque along the velocity ``u = pump * sign(theta_dot)`` (``pump`` default
    ``max_torque``: pumps energy in as fast as allowed), and no torque once ``E >= 0`` (coast up).
    """
    cos_th, sin_th, theta_dot = (float(v) for v in obs)
    theta = math.atan2(sin_th, cos_th)
    pump = max_torque if pump is None else pump
    if cos_th > math.cos(capture):
        u = -(gain[0] * theta + gain[1] * theta_dot)
    elif theta_dot * theta_dot / 6.0 + 5.0 * (cos_th - 1.0) < 0.0:
        u = pump if theta_dot >= 0.0 else -pump
    else:
        u = 0.0
    return np.array([min(max(u, -max_torque), max_torque)], dtype=np.float32)


def pendulum_expert(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pendulum_swing_up`` with the full torque, 2: mean return -130 to -150 over random starts
    (from about 0 when it starts near the top to about -365 from the bottom at rest)."""
    return pendulum_swing_up(obs, 2.0)


def pendulum_medium(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pendulum_swing_up`` with a weak motor, torque limited to 0.5: it pumps slowly and can hold
    the pendulum only within ~0.1 rad of upright, so it often never gets there (mean ~ -630, spread
    from 0 to -1250)."""
    return pendulum_swing_up(obs, 0.5)


def pendulum_random(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Torque uniform in [-2, 2] (mean return ~ -1200)."""
    return rng.uniform(-2.0, 2.0, size=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# MountainCarContinuous-v0: obs = (position, velocity); goal at position 0.45; reward 100 at the
# goal minus 0.1 a^2 per step; the valley bottom is at position -pi/6 ~ -0.5236
# ----------------------------------------------------------------------------------------------

VALLEY_BOTTOM = -math.pi / 6.0
MOUNTAINCAR_LAG = 0.07  # medium: weight of the position in its switch (velocity units per unit of position)


def mountaincar_expert(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Energy pumping with full force: ``a = +1 if velocity > 0 else -1`` (at rest it backs up
    left first). Reaches the goal in every episode in ~80 steps: return ~92."""
    return np.array([1.0 if float(obs[1]) > 0.0 else -1.0], dtype=np.float32)


def mountaincar_medium(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phase-lagged pump with full force: ``a = sign(velocity + 0.07 (position - valley bottom))``.
    The position term keeps it pushing toward the side of the valley it is on after the car has
    turned back, so part of its work is against the motion: it reaches the goal (slowly, return
    ~84-90) from about 70% of the starts, and from the others it burns full force for all 999
    steps (return -99.9). Mean ~ 35."""
    position, velocity = float(obs[0]), float(obs[1])
    return np.array([1.0 if velocity + MOUNTAINCAR_LAG * (position - VALLEY_BOTTOM) > 0.0 else -1.0],
                    dtype=np.float32)


def mountaincar_random(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Force uniform in [-1, 1]: never reaches the goal; return ~ -33 (-0.1 E[a^2] = -1/30 a step)."""
    return rng.uniform(-1.0, 1.0, size=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# KeyToDoor-v0 (tasks.rl.envs): obs = phase one-hot (0-2), agent row/col (3, 4), key-visible flag (5),
# key row/col (6, 7), door row/col (8, 9), t / T (10); positions scaled to [0, 1]; actions 0 up
# (row - 1), 1 down (row + 1), 2 left (col - 1), 3 right (col + 1)
# ----------------------------------------------------------------------------------------------

def _step_toward(row: float, col: float, target_row: float, target_col: float) -> int:
    """The move that shortens the Manhattan distance to the target: rows first, then columns (0 when
    already there). Works on the scaled coordinates, so it needs no grid size."""
    eps = 1e-6
    if target_row < row - eps:
        return 0
    if target_row > row + eps:
        return 1
    if target_col < col - eps:
        return 2
    if target_col > col + eps:
        return 3
    return 0


def keytodoor_expert(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Straight to the key in phase 1 (a shortest path, rows first), up (0) in phase 2 and once the key
    is taken, straight to the door in phase 3. Distances are at most 4 < 8 steps a phase: it succeeds
    (return 1) in every episode. Deterministic."""
    phase = int(np.argmax(obs[0:3]))
    if phase == 0 and obs[5] > 0.5:
        return _step_toward(float(obs[3]), float(obs[4]), float(obs[6]), float(obs[7]))
    if phase == 2:
        return _step_toward(float(obs[3]), float(obs[4]), float(obs[8]), float(obs[9]))
    return 0


def keytodoor_medium(obs: np.ndarray, rng: np.random.Generator) -> int:
    """The expert in phases 2 and 3, but a uniform random walk in phase 1 (it ignores the key): it
    succeeds only when the walk stumbles on the key, 41.5% of the episodes (the door is always
    reached)."""
    if obs[0] > 0.5:
        return int(rng.integers(4))
    return keytodoor_expert(obs, rng)


def keytodoor_random(obs: np.ndarray, rng: np.random.Generator) -> int:
    """A uniform random walk (the paper's behaviour data): succeeds in 17.2% of the episodes (0.415^2:
    it must stumble on the key and then on the door)."""
    return int(rng.integers(4))


# ----------------------------------------------------------------------------------------------
# LuckyGamble-v0 (tasks.rl.envs): obs = (t / 10,); action 0 safe (+1), 1 gamble (+4 w.p. 0.2, else -1)
# ----------------------------------------------------------------------------------------------

LUCKYGAMBLE_MEDIUM_SAFE = 0.75  # medium: probability of playing safe at each step


def luckygamble_expert(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Always safe (0): return 10 exactly, the best expected return."""
    return 0


def luckygamble_medium(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Safe with probability 0.75, else gamble: mean return 7.5."""
    return 0 if rng.random() < LUCKYGAMBLE_MEDIUM_SAFE else 1


def luckygamble_random(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Safe or gamble uniformly: mean return 5 (17% of its episodes reach 10 or more, nearly all by
    luck)."""
    return int(rng.integers(2))


# ----------------------------------------------------------------------------------------------
# Parametric families: the controllers above as points of a family, searched by the replay learner
# (``tasks.rl.dataset``'s ``replay`` datasets, a cross-entropy-method agent's buffer)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    """Controllers ``make(params)`` over a parameter vector, and where a learner starts: a Gaussian
    over the parameters (``mean``, ``std``) and its exploration ``epsilon`` (the probability of a
    uniformly random action at each step, decayed as the learner improves). ``expert`` is the
    parameter vector of the environment's expert, for reference (the learner is never given it)."""

    make: Callable[[np.ndarray], Policy]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    epsilon: float
    expert: tuple[float, ...]


def cartpole_linear(params: np.ndarray) -> Policy:
    """Bang-bang linear state feedback: push right (1) iff ``params . (x, x_dot, theta, theta_dot) > 0``.
    The expert is ``CARTPOLE_GAIN``, the medium ``(0, 0, 0, 1)``."""
    w = np.asarray(params, dtype=np.float64)
    return lambda obs, rng: int(float(np.dot(w, obs)) > 0.0)


def pendulum_family(params: np.ndarray) -> Policy:
    """``pendulum_swing_up`` with the full torque 2 and the parameters (K0, K1, capture angle, pump
    torque), the capture angle clipped to [0, pi] and the pump to [0, 2]. The expert is
    ``(*PENDULUM_GAIN, PENDULUM_CAPTURE, 2)``."""
    k0, k1, capture, pump = (float(v) for v in params)
    capture, pump = min(max(capture, 0.0), math.pi), min(max(pump, 0.0), 2.0)
    return lambda obs, rng: pendulum_swing_up(obs, 2.0, (k0, k1), capture, pump)


# Where the replay learner starts. CartPole: a random direction of the linear family (a random linear
# policy balances the pole for 500 steps surprisingly often, so exploration, a random action with
# probability 0.6 at first, keeps the early episodes mediocre, as a learning agent's are). Pendulum:
# no pumping on average and small gains, so it must learn to swing up; no exploration noise (random
# torques undo the swing-up and the learner stalls).
FAMILIES: dict[str, Family] = {
    "CartPole-v1": Family(cartpole_linear, mean=(0.0, 0.0, 0.0, 0.0), std=(0.5, 0.5, 0.5, 0.5), epsilon=0.6,
                          expert=CARTPOLE_GAIN),
    "Pendulum-v1": Family(pendulum_family, mean=(0.0, 0.0, 0.3, 0.0), std=(5.0, 2.0, 0.3, 0.5), epsilon=0.0,
                          expert=(*PENDULUM_GAIN, PENDULUM_CAPTURE, 2.0)),
}


CONTROLLERS: dict[str, dict[str, Policy]] = {
    "CartPole-v1": {"expert": cartpole_expert, "medium": cartpole_medium, "random": cartpole_random},
    "Pendulum-v1": {"expert": pendulum_expert, "medium": pendulum_medium, "random": pendulum_random},
    "MountainCarContinuous-v0": {"expert": mountaincar_expert, "medium": mountaincar_medium,
                                 "random": mountaincar_random},
    "KeyToDoor-v0": {"expert": keytodoor_expert, "medium": keytodoor_medium, "random": keytodoor_random},
    "LuckyGamble-v0": {"expert": luckygamble_expert, "medium": luckygamble_medium,
                       "random": luckygamble_random},
}
