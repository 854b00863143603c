"""The model and task registries: registration, lookup, errors, wildcards and plugins."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

import baselines  # noqa: F401
import tasks
import zoo
import zoo.registry as registry
from zoo.registry import (Recipe, RegistryError, create_model, get_model_entry, list_models, register_model,
                          register_variant)

DIGITS_SPEC = {"kind": "classification", "input_shape": (1, 8, 8), "num_classes": 10}




def test_builtin_models_are_registered_with_family_and_kinds():
    assert {"vit", "resnet"} <= set(list_models())
    assert get_model_entry("vit").family == "transformer"
    assert get_model_entry("resnet").family == "baseline"
    assert get_model_entry("vit").supports("classification")
    assert not get_model_entry("vit").supports("language_modeling")


def test_list_models_filters_by_wildcard_kind_and_family():
    assert list_models("vi*") == ["vim", "vit"]
    assert list_models("*net") == ["kws_resnet", "resnet"]
    assert list_models("nothing*") == []
    assert "vit" in list_models(kind="classification")
    assert list_models(kind="offline_rl", family="transformer") == [m for m in list_models(kind="offline_rl")
                                                                    if get_model_entry(m).family == "transformer"]
    assert "resnet" not in list_models(family="transformer")


def test_unknown_model_lists_close_matches():
    with pytest.raises(RegistryError, match=r"unknown model 'vti'; did you mean: vit, vim\?"):
        create_model("vti", DIGITS_SPEC)


def test_duplicate_name_is_an_error(clean_registry):
    @register_model("dup_model", family="baseline", kinds=("classification",))
    def dup_model(spec, size="tiny"):
        return nn.Identity()

    with pytest.raises(RegistryError, match="already registered"):
        register_model("dup_model", family="baseline", kinds=("classification",))(dup_model)


def test_one_kind_or_modality_may_be_a_plain_string(clean_registry):
    @register_model("one_kind", family="baseline", kinds="classification", modalities="image")
    def one_kind(spec, size="tiny"):
        return nn.Identity()

    entry = get_model_entry("one_kind")
    assert entry.kinds == ("classification",) and entry.modalities == ("image",)
    assert entry.serves() == "classification[image]"


def test_bad_family_kind_size_and_override_are_errors(clean_registry):
    for family in ("", "  ", None, 3):
        with pytest.raises(RegistryError, match="family must be a non-empty string"):
            register_model("x", family=family, kinds=("classification",))
    with pytest.raises(RegistryError, match=r"serves classification\[image\] tasks, not 'language_modeling'"):
        create_model("vit", {**DIGITS_SPEC, "kind": "language_modeling"})
    with pytest.raises(RegistryError, match="not 'classification' tasks on 'audio' inputs"):
        create_model("vit", {**DIGITS_SPEC, "modality": "audio"})
    with pytest.raises(RegistryError, match="unknown modality video"):
        register_model("x", family="baseline", kinds=("classification",), modalities=("video",))
    with pytest.raises(RegistryError, match="unknown size 'huge'"):
        create_model("vit", DIGITS_SPEC, size="huge")
    with pytest.raises(RegistryError, match="unknown config key.*nlayers"):
        create_model("vit", DIGITS_SPEC, nlayers=3)


def test_family_is_free_text(clean_registry):
    for family in ("mlp", "ssm"):
        @register_model(f"{family}_model", family=family, kinds=("classification",))
        def factory(spec):
            return nn.Identity()

        assert get_model_entry(f"{family}_model").family == family
        assert f"{family}_model" in list_models(family=family)
    assert list_models(family="mlp") == ["mlp_model"]
    assert {"mamba", "vim", "conmamba"} <= set(list_models(family="ssm"))  # the zoo's own SSM variants


def test_factory_gets_the_finished_config(clean_registry):
    """With presets, the registry resolves size + overrides and calls factory(spec, **config); without,
    factory(spec, **overrides)."""
    calls = []
    presets = {"tiny": {"width": 4, "depth": 1}, "small": {"width": 8, "depth": 2}, "base": {"width": 16, "depth": 3}}

    @register_model("preset_model", family="baseline", kinds=("classification",), presets=presets)
    def preset_model(spec, **config):
        calls.append(config)
        return nn.Linear(config["width"], spec["num_classes"])

    @register_model("bare_model", family="baseline", kinds=("classification",))
    def bare_model(spec, size="tiny", **overrides):
        calls.append({"size": size, **overrides})
        return nn.Identity()

    entry = get_model_entry("preset_model")
    assert entry.config("small", {"depth": 5}) == {"width": 8, "depth": 5} and entry.config() == presets["tiny"]
    assert entry.create(DIGITS_SPEC, "small", depth=5).in_features == 8
    assert create_model("preset_model", DIGITS_SPEC).in_features == 4
    create_model("bare_model", DIGITS_SPEC, "base", width=3)
    assert calls == [{"width": 8, "depth": 5}, {"width": 4, "depth": 1}, {"size": "tiny", "width": 3}]
    assert presets["small"] == {"width": 8, "depth": 2}  # the table is not changed by a call
    with pytest.raises(RegistryError, match=r"unknown config key\(s\) nlayers; accepted: width, depth"):
        entry.create(DIGITS_SPEC, nlayers=3)
    with pytest.raises(RegistryError, match="serves classification tasks, not 'seq2seq'"):
        entry.create({"kind": "seq2seq"})
    with pytest.raises(RegistryError, match="unknown size 'huge'"):
        entry.create(DIGITS_SPEC, "huge")
    with pytest.raises(RegistryError, match="model 'partial' has no 'small' preset; it has tiny"):
        register_model("partial", family="baseline", kinds=("classification",), presets={"tiny": {}})(bare_model)
        create_model("partial", DIGITS_SPEC, "small")


def test_entries_store_extra_flops_and_reference(clean_registry):
    def flops(model):
        raise AssertionError("not called by the registry")

    def reference(device):
        raise AssertionError("not called by the registry")

    @register_model("declared", family="baseline", kinds=("classification",), extra_flops=flops, reference=reference,
                    lr=0.1)
    def declared(spec):
        return nn.Identity()

    entry = get_model_entry("declared")
    assert entry.extra_flops is flops and entry.reference is reference and entry.defaults == {"lr": 0.1}
    assert get_model_entry("vit").extra_flops is None and get_model_entry("resnet").reference is None


def test_create_model_applies_size_and_overrides():
    tiny = create_model("vit", DIGITS_SPEC, size="tiny")
    deeper = create_model("vit", DIGITS_SPEC, size="tiny", depth=6)
    small = create_model("vit", DIGITS_SPEC, size="small")
    assert len(tiny.blocks) == 4 and len(deeper.blocks) == 6
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(tiny) < count(deeper) < count(small)


def test_modalities_split_one_kind(clean_registry):
    @register_model("any_input", family="baseline", kinds=("classification",))
    def any_input(spec, size="tiny"):
        return nn.Linear(1, 1)

    @register_model("audio_only", family="baseline", kinds=("classification",), modalities=("audio",))
    def audio_only(spec, size="tiny"):
        return nn.Linear(1, 1)

    image = list_models(kind="classification", modality="image")
    audio = list_models(kind="classification", modality="audio")
    assert "vit" in image and "any_input" in image and "audio_only" not in image
    assert "vit" not in audio and {"any_input", "audio_only"} <= set(audio)
    assert "audio_only" in list_models(kind="classification")  # modality not asked: not checked
    assert get_model_entry("audio_only").serves() == "classification[audio]"


def test_decorator_registers_factory_and_defaults(clean_registry):
    @register_model(family="baseline", kinds=("classification",), lr=0.5)
    def linear_probe(spec, size="tiny"):
        """Logistic regression on raw pixels."""
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(spec["num_classes"]))

    entry = get_model_entry("linear_probe")
    assert entry.defaults == {"lr": 0.5}
    assert entry.description == "Logistic regression on raw pixels."
    assert "linear_probe" in list_models("linear_*", kind="classification")


def test_size_defaults_override_the_model_defaults_at_their_size(clean_registry):
    @register_model(family="baseline", kinds=("classification",), lr=0.5, weight_decay=0.1,
                    size_defaults={"small": dict(lr=0.01, grad_clip=0.25)})
    def probe(spec):
        return nn.Linear(1, 1)

    entry = get_model_entry("probe")
    assert entry.training_defaults("tiny") == {"lr": 0.5, "weight_decay": 0.1}
    assert entry.training_defaults("small") == {"lr": 0.01, "weight_decay": 0.1, "grad_clip": 0.25}
    with pytest.raises(RegistryError, match="unknown training default.*momentum"):
        register_model("bad1", family="baseline", kinds=("classification",), momentum=0.9)(probe)
    with pytest.raises(RegistryError, match="unknown size.*huge"):
        register_model("bad2", family="baseline", kinds=("classification",), size_defaults={"huge": {}})(probe)


def test_the_small_decision_transformer_trains_on_the_papers_recipe(tmp_path):
    """kzl/decision-transformer: AdamW lr 1e-4, weight decay 1e-4, 10k of 100k steps warm-up, clip 0.25;
    tiny keeps the CPU recipe (and the harness's clip of 1.0)."""
    from harness.config import RunConfig, resolve

    task = tasks.create_task("cartpole-mixed", data_dir=tmp_path)
    task.setup()
    for name in ("decision_transformer", "decision_lstm", "bc_mlp", "bc_top10"):
        small = resolve(task, get_model_entry(name), RunConfig(size="small"))
        assert (small["lr"], small["weight_decay"], small["warmup_frac"], small["grad_clip"]) == (1e-4, 1e-4, 0.1, 0.25)
    tiny = resolve(task, get_model_entry("decision_transformer"), RunConfig(size="tiny"))
    assert (tiny["lr"], tiny["warmup_frac"], tiny["grad_clip"]) == (1e-3, task.budget.warmup_frac, 1.0)
    chosen = resolve(task, get_model_entry("decision_transformer"), RunConfig(size="small", lr=3e-4, grad_clip=1.0))
    assert (chosen["lr"], chosen["grad_clip"]) == (3e-4, 1.0)  # what the run sets wins


def install_entry_point(root, monkeypatch, module: str, name: str) -> None:
    """Make ``module`` under ``root`` look like an installed distribution whose entry point ``name``
    is in the ``attention_zoo.models`` group, and let the registry load entry points again."""
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[attention_zoo.models]\n{name} = {module}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_entry_point_plugins_load_on_first_use(tmp_path, monkeypatch, clean_registry):
    """An installed distribution that declares an `attention_zoo.models` entry point joins the zoo."""
    pkg = tmp_path / "ep_plugin_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from torch import nn
        from zoo.registry import register_model

        @register_model("ep_mlp", family="baseline", kinds=("classification",))
        def ep_mlp(spec, size="tiny"):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(spec["num_classes"]))
    """))
    install_entry_point(tmp_path, monkeypatch, "ep_plugin_pkg", "ep_plugin_pkg")
    assert "ep_mlp" in list_models()
    assert get_model_entry("ep_mlp").family == "baseline"


def test_a_broken_entry_point_plugin_is_named_in_one_line(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "ep_broken_pkg.py").write_text("raise ImportError('half installed')\n")
    install_entry_point(tmp_path, monkeypatch, "ep_broken_pkg", "broken")
    with pytest.raises(RegistryError, match=r"plugin entry point 'broken' \(ep_broken_pkg\) failed to import: "
                                            r"ImportError: half installed"):
        list_models()


def test_load_plugin_missing_module_is_a_registry_error():
    with pytest.raises(RegistryError, match="plugin module 'no_such_module_xyz' not found"):
        registry.load_plugin("no_such_module_xyz")


def test_task_registry():
    assert "vision" in tasks.list_domains()
    assert tasks.list_tasks("vision", default_only=True) == ["digits"]
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "image_folder"} <= set(tasks.list_tasks("vision"))
    with pytest.raises(RegistryError, match=r"unknown task 'digts'; did you mean: digits\b"):
        tasks.create_task("digts")
    with pytest.raises(RegistryError, match=r"unknown domain 'visoin'; did you mean: vision\?"):
        tasks.list_tasks("visoin")
    with pytest.raises(RegistryError, match="already registered"):
        tasks.register_task(tasks.get_task_class("digits"))
    assert set(tasks.KINDS) == {"classification", "language_modeling", "seq2seq", "transcription", "offline_rl"}
    assert zoo.list_models is list_models


def test_a_variant_takes_the_models_declarations_and_changes_what_is_given(clean_registry):
    deep = register_variant("vit_deep", like="vit", config={"depth": 8}, recipe=Recipe(lr=1e-3))
    vit = get_model_entry("vit")
    assert deep is get_model_entry("vit_deep") and deep.factory is vit.factory and deep.family == "transformer"
    assert all(p["depth"] == 8 for p in deep.presets.values()) and vit.presets["tiny"]["depth"] != 8
    assert deep.fit == vit.fit and deep.options == vit.options and deep.reference is vit.reference
    assert deep.training_defaults("tiny") == {"lr": 1e-3, "weight_decay": 0.0}
    assert sum(p.numel() for p in create_model("vit_deep", DIGITS_SPEC).parameters()) > \
        sum(p.numel() for p in create_model("vit", DIGITS_SPEC).parameters())
    with pytest.raises(RegistryError, match="model 'vit': depth must be an integer >= 1, got 0"):
        register_variant("vit_flat", like="vit", config={"depth": 0})
    with pytest.raises(RegistryError, match="already registered"):
        register_variant("vit_deep", like="vit")
    assert register_variant("mamba_like", like="vit", family="ssm").family == "ssm"


def test_the_readme_variant_example_runs_as_written(clean_registry):
    """README's "Adding a model": a variant in a few lines (at most 10), as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "register_variant(" in b)
    assert len(block.strip().splitlines()) <= 10
    exec(compile(block, "README.md", "exec"), {})
    assert get_model_entry("vit_deep").presets["tiny"]["depth"] == 8 and get_model_entry("resnet_twin").family == "baseline"


def test_declared_objects_and_the_earlier_keywords_are_the_same_entry(clean_registry):
    from zoo.registry import Sizes
    presets = {"tiny": {"width": 8}}
    register_model("old", family="x", kinds="classification", presets=presets, width="width", lr=0.5)(lambda spec, width: None)
    register_model("new", family="x", kinds="classification", sizes=Sizes(presets, width="width"),
                   recipe=Recipe(lr=0.5, weight_decay=0.0))(lambda spec, width: None)
    old, new = get_model_entry("old"), get_model_entry("new")
    assert (old.presets, old.fit, old.options) == (new.presets, new.fit, new.options)
    assert old.training_defaults() == {"lr": 0.5} and new.training_defaults() == {"lr": 0.5, "weight_decay": 0.0}
    with pytest.raises(RegistryError, match="as one object or as the earlier keywords, not both"):
        register_model("both", family="x", kinds="classification", sizes=Sizes(presets), presets=presets)


def test_a_new_model_is_checked_by_the_per_model_tests_without_editing_them(clean_registry):
    """The per-model tests parametrise over the registry (tests/specs.py): a model registered now is in
    their cases, and their checks pass on it as on every built-in one."""
    import specs
    import test_model_options
    import test_param_fitting
    from zoo.registry import Sizes

    presets = {"tiny": {"hidden": 32, "depth": 2}, "small": {"hidden": 64, "depth": 2}, "base": {"hidden": 128, "depth": 3}}

    @register_model("throwaway", family="mlp", kinds="classification", modalities="image",
                    sizes=Sizes(presets, width="hidden"), recipe=Recipe(lr=1e-3))
    def throwaway(spec, hidden, depth):
        layers, width = [nn.Flatten()], int(__import__("math").prod(spec["input_shape"]))
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        return nn.Sequential(*layers, nn.Linear(width, spec["num_classes"]))

    assert ("throwaway", "digits") in specs.cases() and ("throwaway", "cifar") in specs.cases()
    test_param_fitting.test_every_registered_model_declares_a_width_and_is_covered_here()
    test_param_fitting.test_fits_within_ten_percent_and_keeps_the_constraints("throwaway", "digits")
    test_model_options.test_every_preset_of_every_model_validates_unchanged()
    test_model_options.test_fitted_widths_validate()
