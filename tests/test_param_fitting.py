"""Matched sizes (``--params``): parsing a parameter count and fitting every registered model's width
to it within 10% (the Long Range Arena rule), and the errors when that is impossible."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

import baselines  # noqa: F401  (registers the baselines)
import zoo  # noqa: F401  (registers the transformers)
import zoo.registry as registry
import zoo.sizing as sizing
from zoo.registry import RegistryError, create_model, get_model_entry, list_models, register_model
from zoo.sizing import count_params, fit_to_params, parse_param_count

from specs import SPECS, cases

# What each model's own code requires of its widths, written down here independently of what the
# registry declares, so that a wrong declaration fails: (config key, divisor: int or config key).
CONSTRAINTS: dict[str, list[tuple[str, int | str]]] = {
    "vit": [("dim", "num_heads")],
    "transformer": [("dim", "num_heads")],
    "gpt": [("dim", "num_heads")],
    "conformer": [("d_model", "num_heads")],
    "decision_transformer": [("hidden_dim", "num_heads")],
    "lstm_seq2seq": [("hidden_dim", 2), ("hidden_dim", "num_heads")],
    "las": [("hidden_dim", 2), ("hidden_dim", "num_heads")],
    "bilstm_ctc": [("hidden_dim", 2)],
    "lstm_classifier": [("hidden_dim", 2)],
}
# Dims that move with the width, keeping their tiny preset's ratio to it.
RATIOS: dict[str, dict[str, float]] = {
    "vit": {"mlp_dim": 128 / 64},
    "transformer": {"mlp_dim": 256 / 128},
    "conformer": {"ffn_dim": 384 / 96},
    "decision_lstm": {"lstm_dim": 78 / 64},
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resolved(name: str, size: str = "tiny", **overrides) -> dict:
    return {**get_model_entry(name).presets[size], **overrides}




# ----------------------------------------------------------------------------- parse_param_count

@pytest.mark.parametrize("text, expected", [
    ("250k", 250_000), ("250K", 250_000), ("1.5M", 1_500_000), ("3m", 3_000_000), ("2e6", 2_000_000),
    ("2E6", 2_000_000), ("800000", 800_000), ("1g", 10**9), ("1b", 10**9), ("1.5e3k", 1_500_000),
    (" 100k ", 100_000), ("0.5k", 500), (".25M", 250_000), ("7", 7),
])
def test_parse_param_count_accepts(text, expected):
    assert parse_param_count(text) == expected
    assert type(parse_param_count(text)) is int


@pytest.mark.parametrize("text", ["-5", "-250k", "0", "0k", "0.0", "abc", "12q", "", "k", "1.5", "0.0001k",
                                  "1e-3", "2 5k", "250kk", "1,000", "nan", "inf", "1e6.5"])
def test_parse_param_count_rejects_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"bad parameter count .*expected a positive parameter count: 800000, 250k, "
                                         r"1\.5M, 2e6"):
        parse_param_count(text)


# ----------------------------------------------------------------------------- every model fits

def test_every_registered_model_declares_a_width_and_is_covered_here():
    """A newly registered model without a width knob, or of a kind no spec here serves, fails."""
    for name in list_models():
        entry = get_model_entry(name)
        assert entry.fit is not None, f"{name} declares no width (register_model(..., width=...))"
        assert entry.presets is not None and all(entry.fit.key in p for p in entry.presets.values())
        served = {s for n, s in cases() if n == name}
        assert served, f"no spec in SPECS serves {name} ({entry.serves()})"
        for kind in entry.kinds:  # every kind it serves has a spec here
            assert any(SPECS[s]["kind"] == kind for s in served), f"no {kind} spec for {name}"


@pytest.mark.parametrize("name, spec_name", cases())
def test_fits_within_ten_percent_and_keeps_the_constraints(name, spec_name):
    spec = SPECS[spec_name]
    key = get_model_entry(name).fit.key
    widths = []
    for target in (100_000, 250_000, 1_000_000):
        fitted = fit_to_params(name, spec, target)
        assert set(fitted) >= {key} and all(type(v) is int and v >= 1 for v in fitted.values())
        n = count(create_model(name, spec, "tiny", **fitted))  # a real (CPU) build, as the harness does
        assert abs(n - target) <= 0.10 * target, f"{name} on {spec_name}: {n:,} parameters for {target:,} ({fitted})"
        config = resolved(name, **fitted)
        for dim, div in CONSTRAINTS.get(name, []):
            d = config[div] if isinstance(div, str) else div
            assert config[dim] % d == 0, f"{name}: {dim}={config[dim]} not a multiple of {div}={d}"
        for dim, ratio in RATIOS.get(name, {}).items():
            assert abs(fitted[dim] - ratio * fitted[key]) <= 0.5 + 1e-9, f"{name}: {dim} does not scale with {key}"
        widths.append(fitted[key])
    assert widths == sorted(widths) and widths[0] < widths[-1]  # more parameters, wider


@pytest.mark.parametrize("name, spec_name", cases())
def test_fit_is_the_closest_width(name, spec_name):
    """No allowed neighbouring width comes closer to the target than the fitted one."""
    spec, target = SPECS[spec_name], 250_000
    entry = get_model_entry(name)
    fitted = fit_to_params(name, spec, target)
    key = entry.fit.key
    config = resolved(name)
    step = math.lcm(*(config[m] if isinstance(m, str) else m for m in entry.fit.multiple))
    best = abs(count(create_model(name, spec, **fitted)) - target)
    for width in (w for w in (fitted[key] - step, fitted[key] + step) if w >= step):
        ratios = {k: config[k] / config[key] for k in entry.fit.scales if isinstance(config[k], int)}
        other = {key: width, **{k: max(1, round(r * width)) for k, r in ratios.items()}}
        assert abs(count(create_model(name, spec, **other)) - target) >= best


def test_fits_other_sizes_and_user_overrides():
    spec = SPECS["digits"]
    fitted = fit_to_params("vit", spec, 250_000, size="small", num_heads=6, depth=2)
    assert fitted["dim"] % 6 == 0 and fitted["mlp_dim"] == 2 * fitted["dim"]
    model = create_model("vit", spec, "small", num_heads=6, depth=2, **fitted)
    assert len(model.blocks) == 2 and abs(count(model) - 250_000) <= 25_000
    # a scaled key the user sets stays as set
    fitted = fit_to_params("vit", spec, 250_000, mlp_dim=100)
    assert set(fitted) == {"dim"}
    assert abs(count(create_model("vit", spec, mlp_dim=100, **fitted)) - 250_000) <= 25_000
    # the base Conformer (16 blocks) and the small ResNet, at a larger target
    for name, spec_name, size in (("conformer", "digit_strings", "base"), ("resnet", "cifar", "small")):
        fitted = fit_to_params(name, SPECS[spec_name], 5_000_000, size=size)
        assert abs(count(create_model(name, SPECS[spec_name], size, **fitted)) - 5_000_000) <= 500_000
    # a tighter tolerance where the steps allow it
    fitted = fit_to_params("bc_mlp", SPECS["cartpole"], 123_456, tolerance=0.01)
    assert abs(count(create_model("bc_mlp", SPECS["cartpole"], **fitted)) - 123_456) <= 1235


def test_fitting_is_fast_up_to_ten_million():
    """Counting on the meta device: no weights are allocated, whatever the width (Conformer included)."""
    fit_to_params("vit", SPECS["digits"], 10_000)  # first use of the meta device pays a one-off warm-up
    for name, spec_name in cases():
        start = time.perf_counter()
        fitted = fit_to_params(name, SPECS[spec_name], 10_000_000)
        assert time.perf_counter() - start < 2.0, f"{name} on {spec_name} took too long"
        assert fitted[get_model_entry(name).fit.key] > resolved(name)[get_model_entry(name).fit.key]


def test_every_model_is_counted_on_the_meta_device(monkeypatch):
    """No weights are allocated while fitting a built-in model, the Conformer (whose front end reads a
    tensor back with ``.item()`` while it is built) included: the cap's 10^9 parameters cost nothing."""
    devices = []
    counter = sizing._count_params
    monkeypatch.setattr(sizing, "_count_params",
                        lambda model: devices.append(next(model.parameters()).device.type) or counter(model))
    for name, spec_name in cases():
        devices.clear()
        with pytest.raises(RegistryError, match="too small"):
            fit_to_params(name, SPECS[spec_name], 10**12)
        assert devices and set(devices) == {"meta"}, f"{name} on {spec_name} was built on {set(devices)}"


# ----------------------------------------------------------------------------- impossible targets

@pytest.mark.parametrize("name, spec_name", cases())
def test_impossible_targets_say_why(name, spec_name):
    spec, key = SPECS[spec_name], get_model_entry(name).fit.key
    with pytest.raises(RegistryError, match=rf"cannot fit model '{name}' to 10 parameters within 10%: the closest "
                                            rf"reachable is [\d,]+ \({key}=\d+, \+[\d.]+%\); even the narrowest"):
        fit_to_params(name, spec, 10)
    with pytest.raises(RegistryError, match=rf"cannot fit model '{name}' to 1,000,000,000,000 parameters within "
                                            rf"10%: the closest reachable is [\d,]+ \({key}=\d+, -[\d.]+%\); the "
                                            rf"widest {key} allowed \(\d+, the cap 4096\) is too small"):
        fit_to_params(name, spec, 10**12)
    with pytest.raises(RegistryError, match=rf"model '{name}': the override {key}=64 conflicts with fitting to "
                                            rf"250,000 parameters"):
        fit_to_params(name, spec, 250_000, **{key: 64})


def test_a_target_between_two_widths_names_both():
    with pytest.raises(RegistryError, match=r"within 0\.1%: .*the dim steps of 4 jump over it \(dim=\d+: [\d,]+, "
                                            r"dim=\d+: [\d,]+\)"):
        fit_to_params("vit", SPECS["digits"], 250_000, tolerance=0.001)


def test_bad_arguments_are_errors():
    spec = SPECS["digits"]
    for target in (0, -5, 2.5e5, "250k", True):
        with pytest.raises(RegistryError, match="parameter target must be a positive int"):
            fit_to_params("vit", spec, target)
    with pytest.raises(RegistryError, match="tolerance must be a fraction"):
        fit_to_params("vit", spec, 250_000, tolerance=10)
    with pytest.raises(RegistryError, match="serves classification\\[image\\] tasks, not 'classification' tasks on "
                                            "'audio' inputs"):
        fit_to_params("vit", SPECS["keywords"], 250_000)
    with pytest.raises(RegistryError, match="unknown size 'huge'"):
        fit_to_params("vit", spec, 250_000, size="huge")
    with pytest.raises(RegistryError, match="unknown config key.*nlayers"):
        fit_to_params("vit", spec, 250_000, nlayers=3)
    with pytest.raises(RegistryError, match="unknown model 'vti'"):
        fit_to_params("vti", spec, 250_000)


# ----------------------------------------------------------------------------- declarations

class Wide(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))


def test_a_model_without_a_width_cannot_be_fitted(clean_registry):
    @register_model("no_width", family="baseline", kinds=("classification",))
    def no_width(spec, size="tiny", **overrides):
        return Wide(8, 1)

    with pytest.raises(RegistryError, match=r"model 'no_width' cannot be fitted to 250,000 parameters: it declares "
                                            r"no width knob"):
        fit_to_params("no_width", SPECS["digits"], 250_000)


def test_width_declarations_are_checked_at_registration(clean_registry):
    presets = {"tiny": {"width": 8, "depth": 2}}
    with pytest.raises(RegistryError, match="preset 'tiny' has no config key dim"):
        register_model("m1", family="baseline", kinds=("classification",), presets=presets, width="dim")
    with pytest.raises(RegistryError, match="preset 'tiny' has no config key heads"):
        register_model("m2", family="baseline", kinds=("classification",), presets=presets, width="width",
                       width_multiple="heads")
    with pytest.raises(RegistryError, match="width_scales and config keys in width_multiple need presets="):
        register_model("m3", family="baseline", kinds=("classification",), width="width", width_scales=("depth",))
    with pytest.raises(RegistryError, match="width_multiple takes positive ints"):
        register_model("m4", family="baseline", kinds=("classification",), presets=presets, width="width",
                       width_multiple=0)
    with pytest.raises(RegistryError, match="need width="):
        register_model("m5", family="baseline", kinds=("classification",), presets=presets, width_multiple=2)
    with pytest.raises(RegistryError, match="width 'depth' must be an int in every preset"):
        register_model("m6", family="baseline", kinds=("classification",),
                       presets={"tiny": {"width": 8, "depth": None}}, width="depth")


def test_a_plugin_that_cannot_build_on_meta_is_counted_on_the_cpu(clean_registry):
    """A model that reads a computed tensor back while it is built (not possible on the meta device)."""
    presets = {"tiny": {"width": 8, "depth": 2}, "small": {"width": 16, "depth": 2}, "base": {"width": 32, "depth": 2}}

    @register_model("reads_back", family="baseline", kinds=("classification",), presets=presets, width="width",
                    width_multiple=4)
    def reads_back(spec, width, depth):
        depth = int(torch.ones(depth).sum().item())  # fails on meta
        return Wide(width, depth)

    fitted = fit_to_params("reads_back", SPECS["digits"], 100_000)
    assert fitted["width"] % 4 == 0
    assert abs(count(create_model("reads_back", SPECS["digits"], **fitted)) - 100_000) <= 10_000
    # no presets: the search starts from the narrowest width
    @register_model("bare", family="baseline", kinds=("classification",), width="width")
    def bare(spec, size="tiny", width=1):
        return Wide(width, 3)

    assert fit_to_params("bare", SPECS["digits"], 30_300) == {"width": 100}  # 3 * (100^2 + 100)


# ----------------------------------------------------------------------------- count_params

@pytest.mark.parametrize("name, spec_name", cases())
def test_count_params_matches_a_real_build_without_allocating(name, spec_name, monkeypatch):
    spec = SPECS[spec_name]
    expected = count(create_model(name, spec, "tiny"))
    devices = []
    counter = sizing._count_params
    monkeypatch.setattr(sizing, "_count_params",
                        lambda model: devices.append(next(model.parameters()).device.type) or counter(model))
    assert count_params(name, spec) == expected
    assert count_params(get_model_entry(name), spec, "small") == count(create_model(name, spec, "small"))
    assert set(devices) == {"meta"}


def test_count_params_checks_the_options_as_create_model_does(clean_registry):
    spec = SPECS["digits"]
    assert count_params("vit", spec, depth=2) == count(create_model("vit", spec, depth=2))
    with pytest.raises(RegistryError, match="unknown config key.*nlayers"):
        count_params("vit", spec, nlayers=3)
    with pytest.raises(RegistryError, match="unknown size 'huge'"):
        count_params("vit", spec, "huge")
    with pytest.raises(RegistryError, match="not 'classification' tasks on 'audio' inputs"):
        count_params("vit", SPECS["keywords"])
    with pytest.raises(ValueError, match="hidden_dim 15 must be even"):
        count_params("lstm_seq2seq", SPECS["reversal"], hidden_dim=15)

    @register_model("reads_back_too", family="baseline", kinds=("classification",))
    def reads_back_too(spec, width=8, depth=2):
        return Wide(width, int(torch.ones(depth).sum().item()))  # fails on meta: counted on the CPU

    assert count_params("reads_back_too", spec, width=10) == 2 * (10 * 10 + 10)
