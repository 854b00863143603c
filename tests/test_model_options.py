"""Model options (the config keys of a size preset and their overrides, ``--model-opt KEY=VALUE``):
declared with their types and ranges, checked by ``ModelEntry.config`` before anything is built, with
one-line errors; and the configurations the converters (``from_hf``, ``from_torchvision``,
``from_torchaudio``) cannot copy, refused before converting."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest
import torch
from torch import nn

import baselines  # noqa: F401  (registers the baselines)
import zoo  # noqa: F401  (registers the transformers)
import zoo.registry as registry
from zoo.options import Range
from zoo.registry import RegistryError, create_model, get_model_entry, list_models, register_model
from zoo.sizing import count_params, fit_to_params

from specs import SPECS, spec_of

# (model, key, bad value, the whole message)
BAD = [
    ("vit", "depth", 0, "model 'vit': depth must be an integer >= 1, got 0"),
    ("vit", "depth", -1, "model 'vit': depth must be an integer >= 1, got -1"),
    ("vit", "dim", "abc", "model 'vit': dim must be an integer >= 1, got 'abc'"),
    ("vit", "dropout", 1.5, "model 'vit': dropout must be a number in [0, 1), got 1.5"),
    ("vit", "dropout", 1, "model 'vit': dropout must be a number in [0, 1), got 1"),
    ("vit", "attn_dropout", -0.1, "model 'vit': attn_dropout must be a number in [0, 1), got -0.1"),
    ("vit", "depth", True, "model 'vit': depth must be an integer >= 1, got True"),
    ("vit", "depth", 2.5, "model 'vit': depth must be an integer >= 1, got 2.5"),
    ("vit", "num_heads", None, "model 'vit': num_heads must be an integer >= 1, got None"),
    ("vit", "patch_size", 0, "model 'vit': patch_size must be None (derived by the model) or an integer >= 1, got 0"),
    ("vit", "tokens", "4", "model 'vit': tokens must be an integer >= 1, got '4'"),
    ("gpt", "dropout", float("nan"), "model 'gpt': dropout must be a number in [0, 1), got nan"),
    ("gpt", "dropout", "high", "model 'gpt': dropout must be a number in [0, 1), got 'high'"),
    ("gpt", "dim", float("inf"), "model 'gpt': dim must be an integer >= 1, got inf"),
    ("transformer", "enc_layers", 0, "model 'transformer': enc_layers must be an integer >= 1, got 0"),
    ("transformer", "norm_first", "yes", "model 'transformer': norm_first must be true or false, got 'yes'"),
    ("transformer", "share_embeddings", 1, "model 'transformer': share_embeddings must be true or false, got 1"),
    ("decision_transformer", "activation", "tanh",
     "model 'decision_transformer': activation must be one of 'gelu', 'gelu_tanh', 'relu', 'silu', got 'tanh'"),
    ("decision_transformer", "mlp_dim", -4,
     "model 'decision_transformer': mlp_dim must be None (derived by the model) or an integer >= 1, got -4"),
    ("conformer", "kernel_size", 4, "model 'conformer': kernel_size must be an odd integer >= 1, got 4"),
    ("conformer", "position", "rel",
     "model 'conformer': position must be one of 'relative', 'absolute', 'none', got 'rel'"),
    ("conformer", "subsampling", "none",
     "model 'conformer': subsampling must be one of 'conv2d', 'linear', None, got 'none'"),
    ("conformer", "subsampling_channels", 0,
     "model 'conformer': subsampling_channels must be None (derived by the model) or an integer >= 1, got 0"),
    ("resnet", "blocks", 0, "model 'resnet': blocks must be an integer >= 1, got 0"),
    ("resnet", "width", "wide", "model 'resnet': width must be an integer >= 1, got 'wide'"),
    ("kws_resnet", "stem_pool", (4,), "model 'kws_resnet': stem_pool must be a tuple of 2 integers >= 1, got (4,)"),
    ("kws_resnet", "stem_pool", "4x3", "model 'kws_resnet': stem_pool must be a tuple of 2 integers >= 1, got '4x3'"),
    ("bilstm_ctc", "reductions", (2, 0),
     "model 'bilstm_ctc': reductions must be a non-empty tuple of integers >= 1, got (2, 0)"),
    ("lstm_classifier", "reductions", (),
     "model 'lstm_classifier': reductions must be a non-empty tuple of integers >= 1, got ()"),
    ("lstm", "embed_dim", 0, "model 'lstm': embed_dim must be None (derived by the model) or an integer >= 1, got 0"),
    ("lstm", "tie_weights", "false", "model 'lstm': tie_weights must be true or false, got 'false'"),
    ("lstm_seq2seq", "dec_layers", 0, "model 'lstm_seq2seq': dec_layers must be an integer >= 1, got 0"),
    ("las", "num_heads", 0, "model 'las': num_heads must be an integer >= 1, got 0"),
    ("decision_lstm", "lstm_dim", None, "model 'decision_lstm': lstm_dim must be an integer >= 1, got None"),
    ("bc_mlp", "num_layers", -1, "model 'bc_mlp': num_layers must be an integer >= 0, got -1"),
    ("bc_top10", "hidden_dim", 0, "model 'bc_top10': hidden_dim must be an integer >= 1, got 0"),
]


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("name, key, value, message", BAD, ids=[f"{b[0]}-{b[1]}={b[2]!r}" for b in BAD])
def test_a_bad_value_is_one_line_naming_model_key_range_and_value(name, key, value, message):
    """Rejected by the registry before the factory runs: create_model, count_params (what the harness
    plans with) and fit_to_params (--params) all say the same line."""
    spec = spec_of(name)
    with pytest.raises(RegistryError, match=exactly(message)):
        get_model_entry(name).config("tiny", {key: value})
    with pytest.raises(RegistryError, match=exactly(message)):
        create_model(name, spec, **{key: value})
    with pytest.raises(RegistryError, match=exactly(message)):
        count_params(name, spec, **{key: value})
    if key != get_model_entry(name).fit.key:
        with pytest.raises(RegistryError, match=exactly(message)):
            fit_to_params(name, spec, 100_000, **{key: value})


def test_the_registry_checks_before_the_factory_runs(monkeypatch):
    entry = get_model_entry("vit")
    calls = []
    monkeypatch.setitem(registry._MODELS, "vit", dataclasses.replace(entry, factory=lambda spec, **c: calls.append(c)))
    with pytest.raises(RegistryError, match="depth must be"):
        create_model("vit", SPECS["digits"], depth=0)
    assert calls == []


def test_every_preset_of_every_model_validates_unchanged():
    """Every size of every registered model passes its own declaration, and the config it resolves is
    the preset as it is (same values, same types)."""
    for name in list_models():
        entry = get_model_entry(name)
        assert entry.options, name
        for size, preset in entry.presets.items():
            config = entry.config(size)
            assert config == preset and [type(v) for v in config.values()] == [type(v) for v in preset.values()]


def test_fitted_widths_validate():
    for name in list_models():
        entry, spec = get_model_entry(name), spec_of(name)
        fitted = fit_to_params(name, spec, count_params(name, spec))
        entry.config("tiny", fitted)  # no error


@pytest.mark.parametrize("name, key, value, expected", [
    ("vit", "dropout", 0, 0.0),  # an int where a number goes
    ("vit", "patch_size", 2, 2),
    ("vit", "patch_size", None, None),
    ("bc_mlp", "num_layers", 0, 0),  # no hidden layer: a linear policy
    ("kws_resnet", "stem_pool", [2, 2], [2, 2]),  # a list where a tuple goes (a TOML array)
    ("conformer", "subsampling", None, None),
    ("conformer", "position", "absolute", "absolute"),
    ("transformer", "norm_first", False, False),
    ("decision_transformer", "mlp_dim", 100, 100),
    ("decision_transformer", "dropout", 0.999, 0.999),
])
def test_good_values_pass_with_their_type(name, key, value, expected):
    config = get_model_entry(name).config("tiny", {key: value})
    assert config[key] == expected and type(config[key]) is type(expected)


def test_accepted_values_are_described():
    options = get_model_entry("vit").options
    assert options["dropout"].accepted() == "a number in [0, 1)"
    assert options["depth"].accepted() == "an integer >= 1"
    assert options["patch_size"].accepted() == "None (derived by the model) or an integer >= 1"
    assert get_model_entry("conformer").options["kernel_size"].accepted() == "an odd integer >= 1"
    assert get_model_entry("transformer").options["norm_first"].accepted() == "true or false"


def test_a_valid_model_still_builds_and_cross_key_checks_stay_with_the_model():
    assert isinstance(create_model("bc_mlp", SPECS["cartpole"], num_layers=0).net[0], nn.Linear)
    with pytest.raises(ValueError, match="dim 64 is not divisible by num_heads 3"):
        create_model("vit", SPECS["digits"], num_heads=3)
    with pytest.raises(ValueError, match="hidden_dim 15 must be even"):
        create_model("lstm_seq2seq", SPECS["reversal"], hidden_dim=15)


# ------------------------------------------------------------------ declarations (plugins)



def _factory(spec, **config):
    return nn.Linear(2, 2)


def _presets(**tiny):
    return {"tiny": tiny, "small": tiny, "base": tiny}


def test_a_plugin_declares_bounds_and_choices(clean_registry):
    register_model("plug", family="mlp", kinds="classification", presets=_presets(width=8, extra=0, drop=0.5, act="relu",
                                                                                   pool=(2, 2)),
                   bounds={"extra": (0, None), "drop": Range(0.0, 1.0, max_open=False), "pool": Range(1, 4, length=2)},
                   choices={"act": ("relu", "gelu")})(_factory)
    entry = get_model_entry("plug")
    assert entry.config("tiny", {"extra": 3, "drop": 1.0, "act": "gelu", "pool": (4, 1)})["pool"] == (4, 1)
    for key, value, message in [
        ("extra", -1, "extra must be an integer >= 0, got -1"),
        ("drop", 1.01, "drop must be a number in [0, 1], got 1.01"),
        ("act", "tanh", "act must be one of 'relu', 'gelu', got 'tanh'"),
        ("pool", (5, 1), "pool must be a tuple of 2 integers in [1, 4], got (5, 1)"),
        ("width", 0, "width must be an integer >= 1, got 0"),
    ]:
        with pytest.raises(RegistryError, match=exactly(f"model 'plug': {message}")):
            entry.config("tiny", {key: value})


def test_a_range_in_a_tuple_is_half_open():
    assert Range.of((0.0, 1.0)) == Range(0.0, 1.0, max_open=True)
    assert Range.of((0, None)).describe(integer=True) == ">= 0"
    assert Range(0.0, 1.0, min_open=True).describe(integer=False) == "in (0, 1]"
    assert Range(max=10).describe(integer=True) == "<= 10"
    with pytest.raises(ValueError, match="min 2 is above max 1"):
        Range(2, 1)


def test_declarations_are_checked_at_registration(clean_registry):
    cases = [
        (dict(presets=_presets(width=8, extra=0)),
         "model 'p': preset 'tiny': extra must be an integer >= 1, got 0 (declare the range of extra: "
         "register_model(..., bounds={'extra': ...}))"),
        (dict(presets=_presets(width=8), bounds={"depth": (1, None)}),
         "model 'p': bounds name no config key: depth (config keys: width)"),
        (dict(presets=_presets(width=8), choices={"act": ("relu",)}),
         "model 'p': choices name no config key: act (config keys: width)"),
        (dict(bounds={"width": (1, None)}),
         "model 'p': bounds and choices need presets= (the config keys and their types are the presets')"),
        (dict(presets=_presets(act="relu"), bounds={"act": (0, 1)}),
         "model 'p': bounds apply to numbers, not to act (a str)"),
        (dict(presets=_presets(act="tanh"), choices={"act": ("relu", "gelu")}),
         "model 'p': preset 'tiny': act must be one of 'relu', 'gelu', got 'tanh'"),
        (dict(presets=_presets(width=8), bounds={"width": "positive"}),
         "model 'p': bounds of width must be a Range or a (min, max) pair, got 'positive'"),
        (dict(presets={"tiny": {"width": 8}, "small": {"width": "8"}}),
         "model 'p': width is an int in preset 'tiny' but a str in preset 'small'"),
        (dict(presets=_presets(width=8, schedule={"warmup": 3}), bounds={"schedule": (0, None)}),
         "model 'p': bounds apply to numbers, not to schedule (a dict)"),
        (dict(presets=_presets(act="relu"), bounds={"act": (0, 1)}, choices={"act": ("relu",)}),
         "model 'p': act: declare bounds or choices, not both"),
    ]
    for kwargs, message in cases:
        with pytest.raises(RegistryError, match=exactly(message)):
            register_model("p", family="mlp", kinds="classification", **kwargs)(_factory)
    assert "p" not in registry._MODELS


def test_a_plugin_without_presets_is_not_checked(clean_registry):
    seen = []

    @register_model("bare", family="mlp", kinds="classification")
    def bare(spec, **config):
        seen.append(config)
        return nn.Identity()

    create_model("bare", SPECS["digits"], dim="abc", depth=0)
    assert seen == [{"dim": "abc", "depth": 0}]


def test_a_preset_value_of_another_type_is_not_checked(clean_registry):
    presets = {"tiny": dict(width=4, schedule={"warmup": 3}, lr=0), "small": dict(width=4, schedule={}, lr=0.5)}
    register_model("odd_types", family="mlp", kinds="classification", presets=presets)(_factory)
    entry = get_model_entry("odd_types")
    assert entry.config("tiny", {"schedule": "anything"})["schedule"] == "anything"
    assert entry.config("tiny", {"lr": 2})["lr"] == 2.0  # 0 in a preset: a float key, as an int and a float are


# ------------------------------------------------------------------ configurations converters cannot copy

def _tv_vit(**kwargs):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=8, patch_size=2, num_layers=2, num_heads=2, hidden_dim=16,
                                                mlp_dim=32, num_classes=3, **kwargs).eval()


@pytest.mark.parametrize("norm", [functools.partial(nn.LayerNorm, eps=1e-6, bias=False),
                                  functools.partial(nn.LayerNorm, eps=1e-6, elementwise_affine=False),
                                  functools.partial(nn.RMSNorm, eps=1e-6)], ids=["no_bias", "no_affine", "rms"])
def test_vit_from_torchvision_refuses_other_norm_layers(norm):
    from zoo.vit import VisionTransformer

    with pytest.raises(ValueError, match=r"^unsupported torchvision ViT: norm_layer=.* \(supported: LayerNorm "
                                         r"with weight and bias, one eps throughout\)$"):
        VisionTransformer.from_torchvision(_tv_vit(norm_layer=norm))


def test_vit_from_torchvision_copies_another_layer_norm_eps():
    from zoo.vit import VisionTransformer

    tv = _tv_vit(norm_layer=functools.partial(nn.LayerNorm, eps=1e-3))
    with torch.no_grad():
        for p in tv.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(VisionTransformer.from_torchvision(tv).eval()(x), tv(x), atol=1e-5, rtol=0)


def test_conformer_from_torchaudio_names_the_positions_it_accepts():
    torchaudio = pytest.importorskip("torchaudio")
    from zoo.conformer import ConformerEncoder

    ta = torchaudio.models.Conformer(input_dim=16, num_heads=2, ffn_dim=32, num_layers=1, depthwise_conv_kernel_size=3)
    with pytest.raises(ValueError, match=exactly("position must be 'absolute' or 'none' (torchaudio's Conformer has no "
                                                 "relative positions), got 'relative'")):
        ConformerEncoder.from_torchaudio(ta, position="relative")


def test_decision_transformer_from_hf_names_only_what_it_cannot_copy():
    transformers = pytest.importorskip("transformers")
    from zoo.decision_transformer import DecisionTransformer

    for setting, message in [
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True (supported: False)"),
        (dict(add_cross_attention=True), "add_cross_attention=True (supported: False)"),
        (dict(activation_function="gelu_fast"),
         "activation_function='gelu_fast' (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, silu, swish)"),
        (dict(scale_attn_weights=False), "scale_attn_weights=False (supported: True)"),
    ]:
        config = transformers.DecisionTransformerConfig(state_dim=3, act_dim=2, hidden_size=16, n_layer=1,
                                                        bos_token_id=None, eos_token_id=None, **setting)
        with pytest.raises(ValueError, match=exactly(f"unsupported DecisionTransformerConfig: {message}")):
            DecisionTransformer.from_hf(transformers.DecisionTransformerModel(config))
