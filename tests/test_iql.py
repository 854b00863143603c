"""Implicit Q-Learning (baselines/iql.py): its three losses, the target critic, acting, sizes, and
learning what the data's rewards say on a two-armed bandit where behaviour cloning cannot."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import baselines  # noqa: F401
import zoo  # noqa: F401
from baselines.iql import IQL
from zoo.registry import SIZES, create_model, get_model_entry

SPEC_DISCRETE = {"kind": "offline_rl", "state_dim": 4, "act_dim": 2, "discrete": True, "max_ep_len": 500,
                 "context_len": 20}
SPEC_CONTINUOUS = {"kind": "offline_rl", "state_dim": 3, "act_dim": 1, "discrete": False, "max_ep_len": 200,
                   "context_len": 20}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_with_corl_defaults():
    entry = get_model_entry("iql")
    assert entry.family == "baseline" and entry.kinds == ("offline_rl",)
    # CORL: Adam 3e-4, no weight decay, no warm-up, no gradient clipping (None: the harness clips nothing)
    assert entry.defaults == {"lr": 3e-4, "weight_decay": 0.0, "warmup_frac": 0.0, "grad_clip": None}
    model = create_model("iql", SPEC_CONTINUOUS)
    assert (model.discount, model.expectile, model.beta, model.target_tau) == (0.99, 0.7, 3.0, 0.005)
    assert model.learns_by_td and model.actor_kind == "gaussian"
    assert create_model("iql", SPEC_CONTINUOUS, actor="deterministic").log_std is None
    assert create_model("iql", SPEC_DISCRETE, actor="deterministic").actor_kind == "categorical"


@pytest.mark.parametrize("task_spec", [SPEC_DISCRETE, SPEC_CONTINUOUS], ids=["discrete", "continuous"])
@pytest.mark.parametrize("size", SIZES)
def test_trained_parameters_match_the_decision_transformer_within_ten_percent(size, task_spec):
    dt, iql = create_model("decision_transformer", task_spec, size), create_model("iql", task_spec, size)
    assert 0.9 <= count(iql) / count(dt) <= 1.1, (count(iql), count(dt))
    buffers = sum(b.numel() for b in iql.buffers())
    assert buffers == count(iql.q1) + count(iql.q2)  # the target critic: buffers, not parameters


def test_acting_reads_the_states_only():
    model = create_model("iql", SPEC_CONTINUOUS).eval()
    s = torch.randn(2, 5, 3)
    out = model(torch.randn(2, 5, 1), s, torch.randn(2, 5, 1), torch.zeros(2, 5, dtype=torch.long))
    assert out.shape == (2, 5, 1) and out.abs().max() < 1  # tanh-bounded mean action
    assert torch.equal(out, model(None, s))
    logits = create_model("iql", SPEC_DISCRETE).eval()(None, torch.randn(2, 5, 4))
    assert logits.shape == (2, 5, 2)


def transitions(n: int = 64, state_dim: int = 3, act_dim: int = 1, discrete: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, state_dim, generator=g)
    a = (F.one_hot(torch.randint(0, act_dim, (n,), generator=g), act_dim).float() if discrete
         else torch.rand(n, act_dim, generator=g) * 2 - 1)
    return s, a, torch.randn(n, generator=g), torch.randn(n, state_dim, generator=g), (torch.rand(n, generator=g) < 0.1).float()


def test_loss_is_the_three_iql_losses():
    """The value, critic and policy losses, written out here from the paper's equations."""
    torch.manual_seed(0)
    model = IQL(3, 1, hidden_dim=8)
    with torch.no_grad():  # make the target differ from the twins
        for p in model.q1.parameters():
            p.add_(0.1)
    s, a, r, s2, done = transitions()
    reference = copy.deepcopy(model)
    reference.update_target()
    target = {n: getattr(reference, reference._target_name(n)) for n in reference._critic_params()}

    def q(net, prefix, x):  # an MLP of two hidden ReLU layers from the given weights (Linear, ReLU, Dropout)
        for i in (0, 3):
            x = F.relu(F.linear(x, net[f"{prefix}.{i}.weight"], net[f"{prefix}.{i}.bias"]))
        return F.linear(x, net[f"{prefix}.6.weight"], net[f"{prefix}.6.bias"]).squeeze(-1)

    x = torch.cat([s, a], -1)
    target_q = torch.minimum(q(target, "q1", x), q(target, "q2", x))
    v = reference.value(s).squeeze(-1)
    u = target_q - v
    value_loss = torch.where(u < 0, 0.3, 0.7) * u ** 2
    y = r + 0.99 * (1 - done) * reference.value(s2).squeeze(-1)
    q_loss = ((reference.q1(x).squeeze(-1) - y) ** 2 + (reference.q2(x).squeeze(-1) - y) ** 2) / 2
    std = reference.log_std.exp()
    log_prob = torch.distributions.Normal(torch.tanh(reference.actor(s)), std).log_prob(a).squeeze(-1)
    policy_loss = -torch.exp(3.0 * u).clamp(max=100) * log_prob
    expected = value_loss.mean() + q_loss.mean() + policy_loss.mean()
    got = model.td_loss((s, a, r, s2, done))
    torch.testing.assert_close(got, expected)


def test_deterministic_actor_weights_the_squared_error():
    """CORL's DeterministicPolicy: the advantage weights ||tanh(MLP(s)) - a||^2 instead of -log pi."""
    torch.manual_seed(0)
    model = IQL(3, 2, hidden_dim=8, actor="deterministic")
    s, a, r, s2, done = transitions(act_dim=2)
    gaussian = IQL(3, 2, hidden_dim=8)
    gaussian.load_state_dict(model.state_dict(), strict=False)  # the same networks, plus a log std
    u = (torch.minimum(model._q("q1", s, a, True), model._q("q2", s, a, True)) - model.value(s).squeeze(-1)).detach()
    weight = torch.exp(3.0 * u).clamp(max=100)
    bc_det = weight * (torch.tanh(model.actor(s)) - a).square().sum(-1)
    bc_gauss = -weight * gaussian.log_prob(s, a)
    difference = model.td_loss((s, a, r, s2, done)) - gaussian.td_loss((s, a, r, s2, done))
    torch.testing.assert_close(difference, bc_det.mean() - bc_gauss.mean())


def test_target_follows_the_twins_by_polyak_averaging():
    torch.manual_seed(0)
    model = IQL(3, 1, hidden_dim=8, target_tau=0.25)
    w = model.q1[0].weight
    assert torch.equal(model.target_q1_0_weight, w)  # starts as a copy
    with torch.no_grad():
        w.add_(1.0)
    model.update_target()
    torch.testing.assert_close(model.target_q1_0_weight, w - 0.75)
    state = model.state_dict()
    assert "target_q1_0_weight" in state and "target_q2_6_bias" in state  # checkpointed with the model


def test_gradients_stay_within_each_learner():
    """The policy's loss does not move the critics or V, V's does not move the twins: the sum is the
    three separate updates of CORL's three optimizers."""
    torch.manual_seed(0)
    model = IQL(3, 1, hidden_dim=8)
    s, a, r, s2, done = transitions()
    model.update_target = lambda: None  # compare the same target in both passes
    total = model.td_loss((s, a, r, s2, done))
    grads = torch.autograd.grad(total, list(model.actor.parameters()) + [model.log_std], retain_graph=True)
    weight = torch.exp(3.0 * (torch.minimum(model._q("q1", s, a, True), model._q("q2", s, a, True))
                              - model.value(s).squeeze(-1))).clamp(max=100).detach()
    alone = -(weight * model.log_prob(s, a)).mean()
    for g, h in zip(grads, torch.autograd.grad(alone, list(model.actor.parameters()) + [model.log_std])):
        torch.testing.assert_close(g, h)


def test_learns_the_better_arm_that_cloning_cannot_see():
    """A one-step bandit: the data takes arm 0 three times as often as arm 1, but arm 1 pays 1 and arm 0
    nothing. Behaviour cloning would pick arm 0; IQL's advantage weighting picks arm 1."""
    torch.manual_seed(0)
    model = IQL(2, 2, hidden_dim=32, discrete=True, beta=10.0, target_tau=0.05)
    n = 512
    s = torch.randn(n, 2)
    arm = (torch.rand(n) < 0.25).long()
    a = F.one_hot(arm, 2).float()
    r, done = arm.float(), torch.ones(n)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model.td_loss((s, a, r, torch.zeros_like(s), done))
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = model.q1(s).mean(0)
    assert q[1] - q[0] > 0.8  # Q learned the payoffs
    assert (model(None, s).argmax(-1) == 1).float().mean() > 0.9  # the policy takes the better arm


def test_rejects_an_expectile_outside_zero_one():
    with pytest.raises(ValueError, match="expectile"):
        IQL(3, 1, expectile=1.0)
    from zoo.registry import RegistryError
    with pytest.raises(RegistryError, match="expectile"):
        create_model("iql", SPEC_CONTINUOUS, expectile=0.0)


def test_the_harness_trains_it_as_corl_does(tmp_path):
    """No gradient clipping (the harness clips at the model's registered grad_clip, 1.0 unless it says),
    no warm-up, no weight decay: what the cell's resolved configuration says."""
    pytest.importorskip("gymnasium")
    from harness.config import RunConfig, resolve
    from tasks import create_task

    task = create_task("gamble-random", data_dir=tmp_path)
    task.setup()
    resolved = resolve(task, get_model_entry("iql"), RunConfig())
    assert resolved["grad_clip"] is None and resolved["warmup_frac"] == 0.0 and resolved["weight_decay"] == 0.0
    assert resolve(task, get_model_entry("decision_transformer"), RunConfig())["grad_clip"] == 1.0
