"""The Decision Transformer and its rivals: Decision LSTM, BC-MLP and %BC (offline_rl kind)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

import baselines  # noqa: F401
import zoo  # noqa: F401
from baselines.lstm import DecisionLSTM
from baselines.mlp import BCMLP
from zoo.decision_transformer import DecisionTransformer
from zoo.registry import SIZES, RegistryError, create_model, get_model_entry
from zoo.trajectory import DEFAULT_INIT, INITS, TrajectoryModel

MODELS = ("decision_transformer", "decision_lstm", "bc_mlp", "bc_top10")
SPEC_DISCRETE = {"kind": "offline_rl", "state_dim": 4, "act_dim": 2, "discrete": True, "max_ep_len": 500,
                 "context_len": 20}  # CartPole-like
SPEC_CONTINUOUS = {"kind": "offline_rl", "state_dim": 3, "act_dim": 1, "discrete": False, "max_ep_len": 200,
                   "context_len": 20}  # Pendulum-like
TINY = {"decision_transformer": dict(hidden_dim=16, num_layers=2, num_heads=2, dropout=0.0),
        "decision_lstm": dict(hidden_dim=16, lstm_dim=20, num_layers=2, dropout=0.0),
        "bc_mlp": dict(hidden_dim=16, num_layers=2, dropout=0.0)}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def spec(state_dim: int = 3, act_dim: int = 2, discrete: bool = False, max_ep_len: int = 50) -> dict:
    return {"kind": "offline_rl", "state_dim": state_dim, "act_dim": act_dim, "discrete": discrete,
            "max_ep_len": max_ep_len, "context_len": 8}


def tiny(name: str, **spec_kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, spec(**spec_kw), "tiny", **TINY[name]).double().eval()


def inputs(B: int = 3, K: int = 7, state_dim: int = 3, act_dim: int = 2, max_ep_len: int = 50,
           seed: int = 0) -> tuple[torch.Tensor, ...]:
    """returns_to_go (B, K, 1), states (B, K, S), actions (B, K, A), timesteps (B, K), mask (B, K):
    row 0 unpadded, row 1 with 3 steps of left padding, row 2 with K - 1."""
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(B, K, 1, generator=g, dtype=torch.float64)
    s = torch.randn(B, K, state_dim, generator=g, dtype=torch.float64)
    a = torch.randn(B, K, act_dim, generator=g, dtype=torch.float64)
    t = torch.randint(0, max_ep_len - K, (B, 1), generator=g) + torch.arange(K)
    mask = torch.ones(B, K, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :K - 1] = 0
    return R, s, a, t, mask


# --- registration and sizes ---------------------------------------------------------------------------

def test_registered_for_offline_rl_with_training_defaults():
    families = {"decision_transformer": "transformer", "decision_lstm": "baseline", "bc_mlp": "baseline",
                "bc_top10": "baseline"}
    for name, family in families.items():
        entry = get_model_entry(name)
        assert entry.family == family and entry.kinds == ("offline_rl",)
        assert entry.defaults == {"lr": 1e-3, "weight_decay": 1e-4}
    assert isinstance(create_model("decision_transformer", SPEC_DISCRETE), DecisionTransformer)
    assert isinstance(create_model("decision_lstm", SPEC_DISCRETE), DecisionLSTM)
    assert isinstance(create_model("bc_top10", SPEC_DISCRETE), BCMLP)


def test_small_is_the_official_configuration():
    model = create_model("decision_transformer", SPEC_CONTINUOUS, "small")
    assert model.hidden_dim == 128 and len(model.blocks) == 3 and model.blocks[0].attn.num_heads == 1
    assert model.blocks[0].mlp.act is F.relu and model.embed_dropout.p == 0.1
    assert model.context_len == 20 and model.max_ep_len == 200


@pytest.mark.parametrize("task_spec", [SPEC_DISCRETE, SPEC_CONTINUOUS], ids=["discrete", "continuous"])
@pytest.mark.parametrize("size", SIZES)
def test_parameter_counts_match_within_ten_percent(size, task_spec):
    counts = {name: count(create_model(name, task_spec, size)) for name in MODELS}
    assert max(counts.values()) <= 1.1 * min(counts.values()), counts


def test_bc_top10_is_bc_on_a_tenth_of_the_trajectories():
    top, bc = create_model("bc_top10", SPEC_DISCRETE), create_model("bc_mlp", SPEC_DISCRETE)
    assert top.trajectory_fraction == 0.1 and bc.trajectory_fraction == 1.0
    assert count(top) == count(bc)
    dt = create_model("decision_transformer", SPEC_DISCRETE)
    assert getattr(dt, "trajectory_fraction", 1.0) == 1.0  # how the task reads it


# --- initialisation -----------------------------------------------------------------------------------

def outer_std(model: TrajectoryModel) -> dict[str, float]:
    """The std of the timestep table, of the state embedding's weights and of the action head's bias."""
    return {"timestep": model.embed_timestep.weight.std().item(), "state": model.embed_state.weight.std().item(),
            "head_bias": model.predict_action[0].bias.abs().max().item()}


@pytest.mark.parametrize("name", ["decision_transformer", "decision_lstm"])
def test_each_init_gives_its_distribution(name):
    """kzl: PyTorch's defaults (timestep rows N(0, 1), Kaiming-uniform linears with biases); hf: all
    N(0, 0.02) with zero biases; timestep: PyTorch's defaults but the timestep table N(0, 0.02)."""
    task_spec = dict(SPEC_CONTINUOUS, state_dim=16)  # 16 inputs: Kaiming-uniform std 1/sqrt(3 * 16) = 0.14
    models = {}
    for init in INITS:
        torch.manual_seed(0)
        models[init] = create_model(name, task_spec, "tiny", init=init)
        assert models[init].init == init
    kzl, hf, timestep = (outer_std(models[i]) for i in ("kzl", "hf", "timestep"))
    assert 0.95 < kzl["timestep"] < 1.05 and 0.019 < hf["timestep"] < 0.021 and 0.019 < timestep["timestep"] < 0.021
    assert 0.12 < kzl["state"] < 0.16 and 0.12 < timestep["state"] < 0.16 and 0.015 < hf["state"] < 0.025
    assert kzl["head_bias"] > 0 and timestep["head_bias"] > 0 and hf["head_bias"] == 0
    if name == "decision_transformer":  # the GPT-2 trunk keeps its own init whatever ``init`` says
        stds = {i: m.blocks[0].mlp.fc1.weight.std().item() for i, m in models.items()}
        assert all(0.018 < v < 0.022 for v in stds.values()), stds


def test_init_is_a_registered_option_with_the_chosen_default():
    for name in ("decision_transformer", "decision_lstm"):
        entry = get_model_entry(name)
        assert all(entry.presets[size]["init"] == DEFAULT_INIT for size in SIZES)
        with pytest.raises(RegistryError, match="init"):
            entry.config("tiny", {"init": "xavier"})
    with pytest.raises(ValueError, match="init"):
        DecisionTransformer(3, 2, init="xavier")


# --- parity with transformers' DecisionTransformerModel -----------------------------------------------

@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "left_padded"])
def test_matches_hf_decision_transformer(attn, padded):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.DecisionTransformerConfig(
        state_dim=3, act_dim=2, hidden_size=32, n_layer=2, n_head=2, max_ep_len=50, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, attn_implementation=attn)
    hf = transformers.DecisionTransformerModel(config).eval()
    with torch.no_grad():  # move every weight off its initial value (LayerNorms start at 1 and 0)
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert hf.encoder.wpe.weight[0].abs().max() > 0.05  # HF adds wpe[0] to every token: it must be folded
    model = DecisionTransformer.from_hf(hf).eval()
    assert not any("wpe" in k for k in model.state_dict())
    R, s, a, t, mask = (x.float() if x.is_floating_point() else x for x in inputs())
    if not padded:
        mask = torch.ones_like(mask)
    with torch.no_grad():
        out = hf(states=s, actions=a, returns_to_go=R, timesteps=t, attention_mask=mask)
        ours = model.forward_all(R, s, a, t, mask)
        action = model(R, s, a, t, mask)
    real = mask.bool()
    torch.testing.assert_close(action[real], out.action_preds[real], atol=1e-5, rtol=0)
    for theirs, mine in zip((out.state_preds, out.action_preds, out.return_preds), ours):
        torch.testing.assert_close(mine[real], theirs[real], atol=1e-5, rtol=0)


def test_from_hf_rejects_what_it_cannot_copy():
    transformers = pytest.importorskip("transformers")
    config = transformers.DecisionTransformerConfig(state_dim=3, act_dim=2, hidden_size=16, n_layer=1,
                                                    scale_attn_by_inverse_layer_idx=True,
                                                    bos_token_id=None, eos_token_id=None)
    with pytest.raises(ValueError, match="unsupported"):
        DecisionTransformer.from_hf(transformers.DecisionTransformerModel(config))


# --- causality and padding ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["decision_transformer", "decision_lstm"])
def test_later_steps_never_change_earlier_predictions(name):
    model = tiny(name)
    R, s, a, t, _ = inputs()
    base = model(R, s, a, t)
    K = R.shape[1]
    for step in range(K):
        # the action a_t itself is not seen by its own prediction (read at the state token s_t)
        a2 = a.clone()
        a2[:, step] += 1.0
        out = model(R, s, a2, t)
        torch.testing.assert_close(out[:, :step + 1], base[:, :step + 1], atol=1e-12, rtol=0)
        if step + 1 < K:
            assert (out[:, step + 1:] - base[:, step + 1:]).abs().max() > 1e-6
        # the return to go, the state and the timestep of step t reach predictions from t on only
        R2, s2, t2 = R.clone(), s.clone(), t.clone()
        R2[:, step] += 1.0
        s2[:, step] -= 1.0
        t2[:, step] = (t2[:, step] + 5) % 50
        out = model(R2, s2, a, t2)
        torch.testing.assert_close(out[:, :step], base[:, :step], atol=1e-12, rtol=0)
        assert (out[:, step] - base[:, step]).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["decision_transformer", "decision_lstm"])
def test_values_at_padded_steps_change_nothing(name):
    model = tiny(name)
    R, s, a, t, mask = inputs()
    base = model(R, s, a, t, mask)
    pad = ~mask.bool()
    g = torch.Generator().manual_seed(1)
    R2 = torch.where(pad[..., None], torch.randn(R.shape, generator=g, dtype=R.dtype), R)
    s2 = torch.where(pad[..., None], 10 * torch.randn(s.shape, generator=g, dtype=s.dtype), s)
    a2 = torch.where(pad[..., None], torch.randn(a.shape, generator=g, dtype=a.dtype), a)
    t2 = torch.where(pad, torch.randint(0, 50, t.shape, generator=g), t)
    out = model(R2, s2, a2, t2, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[mask.bool()], base[mask.bool()], atol=1e-12, rtol=0)


def test_decision_transformer_left_padding_equals_the_shorter_window():
    """Attention skips padded keys outright: a left-padded window predicts what the unpadded shorter
    one does (the Decision LSTM only promises independence from the padded values; see its doc)."""
    model = tiny("decision_transformer")
    R, s, a, t, mask = inputs()
    out = model(R, s, a, t, mask)
    for row in range(R.shape[0]):
        real = mask[row].bool()
        alone = model(R[row:row + 1, real], s[row:row + 1, real], a[row:row + 1, real], t[row:row + 1, real])
        torch.testing.assert_close(out[row, real], alone[0], atol=1e-12, rtol=0)


def test_bc_reads_the_current_state_only():
    model = tiny("bc_mlp")
    R, s, a, t, mask = inputs()
    base = model(R, s, a, t, mask)
    torch.testing.assert_close(model(-R, s, torch.zeros_like(a), t.flip(1), None), base)
    s2 = s.clone()
    s2[:, 3] += 1.0
    changed = (model(R, s2, a, t, mask) - base).abs().amax(dim=(0, 2)) > 1e-9
    assert changed.tolist() == [False, False, False, True, False, False, False]


# --- heads ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["decision_transformer", "decision_lstm", "bc_mlp"])
def test_continuous_actions_are_squashed_and_discrete_ones_are_logits(name):
    R, s, a, t, mask = inputs(act_dim=3)
    continuous = tiny(name, act_dim=3)
    with torch.no_grad():  # a large head pushes pre-activations far outside (-1, 1)
        head = continuous.net[-2] if name == "bc_mlp" else continuous.predict_action[0]
        head.weight.mul_(100.0)
    out = continuous(R, s, a, t, mask)
    assert out.shape == (3, 7, 3)
    assert out.abs().max() <= 1.0 and out.abs().max() > 0.99  # (tanh saturates to 1.0 in float)
    discrete = tiny(name, act_dim=3, discrete=True)
    assert discrete.discrete
    with torch.no_grad():
        head = discrete.net[-1] if name == "bc_mlp" else discrete.predict_action[0]
        head.weight.mul_(100.0)
    onehot = F.one_hot(torch.randint(0, 3, (3, 7)), 3).double()
    logits = discrete(R, s, onehot, t, mask)
    assert logits.shape == (3, 7, 3) and logits.abs().max() > 1.0


def test_all_heads_have_hf_shapes():
    model = tiny("decision_lstm")
    R, s, a, t, mask = inputs()
    states, actions, returns = model.forward_all(R, s, a, t, mask)
    assert states.shape == (3, 7, 3) and actions.shape == (3, 7, 2) and returns.shape == (3, 7, 1)
    assert isinstance(model, TrajectoryModel)


# --- learning ------------------------------------------------------------------------------------------

def test_decision_transformer_learns_to_copy_an_action_pattern():
    """Each trajectory repeats its own random pair of discrete actions (a, b, a, b, ...): from step 2
    on the next action is the one two steps back, which only attention over the context can find."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    A, K = 3, 6
    model = create_model("decision_transformer", spec(state_dim=2, act_dim=A, discrete=True, max_ep_len=16),
                         "tiny", hidden_dim=32, num_layers=2, num_heads=2, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)

    def batch(B: int) -> tuple[torch.Tensor, ...]:
        target = torch.randint(0, A, (B, 2), generator=g)[:, torch.arange(K) % 2]  # (B, K)
        return (torch.randn(B, K, 1, generator=g), torch.randn(B, K, 2, generator=g),
                F.one_hot(target, A).float(), torch.arange(K).expand(B, K), target)

    start, losses = time.perf_counter(), []
    for _ in range(150):
        R, s, a, t, target = batch(32)
        loss = F.cross_entropy(model(R, s, a, t)[:, 2:].reshape(-1, A), target[:, 2:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    R, s, a, t, target = batch(256)
    with torch.no_grad():
        accuracy = (model(R, s, a, t).argmax(-1) == target)[:, 2:].float().mean().item()
    assert losses[-1] < 0.1 * losses[0] and accuracy > 0.95, (losses[0], losses[-1], accuracy)
    assert time.perf_counter() - start < 30  # ~1 s on one core


def test_the_small_size_trains_on_the_papers_schedule_warm_up_then_constant():
    """kzl's LambdaLR is min((t + 1) / warmup, 1): no decay after the warm-up (the harness's own recipe
    decays with a cosine); the small size of every offline-RL model declares it."""
    from harness.trainer import lr_factor
    for name in ("decision_transformer", "decision_lstm", "bc_mlp", "bc_top10"):
        assert get_model_entry(name).training_defaults("small")["schedule"] == "warmup_constant", name
        assert "schedule" not in get_model_entry(name).training_defaults("tiny")
    constant, cosine = lr_factor(100, 0.1, "warmup_constant"), lr_factor(100, 0.1)
    assert [constant(t) for t in (0, 9, 10, 50, 99)] == [0.1, 1.0, 1.0, 1.0, 1.0]
    assert cosine(9) == 1.0 and cosine(99) < 0.01
