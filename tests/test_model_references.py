"""Each model's declared bench reference (``register_model(..., reference=...)``, ``zoo.reference``):
ours and theirs compute the same thing, and optional packages stay optional."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import baselines  # noqa: F401
import zoo  # noqa: F401
from zoo.reference import Reference
from zoo.registry import get_model_entry, list_models

WITH_REFERENCE = [n for n in list_models() if get_model_entry(n).reference is not None]  # what the models declare


def test_every_transformer_declares_a_reference():
    """Each of the zoo's transformer families is held to a reference implementation (bench, parity)."""
    assert {n for n in list_models(family="transformer")} <= set(WITH_REFERENCE)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_reference_shares_weights_and_outputs(name):
    """Every reference but timm's gives our outputs; timm's (its own initialisation) has our parameter count."""
    torch.manual_seed(0)
    ref = get_model_entry(name).reference(torch.device("cpu"))
    assert isinstance(ref, Reference) and ref.theirs and ref.batch_size > 0 and ref.input_size
    models = {"zoo": ref.ours, **ref.theirs}
    if "timm" in models:
        assert count(models.pop("timm")) == count(ref.ours)
    with torch.no_grad():
        outputs = {label: ref.forward(m.eval(), ref.inputs()) for label, m in models.items()}
    for label, out in outputs.items():
        torch.testing.assert_close(out, outputs["zoo"], atol=1e-4, rtol=1e-4, msg=f"{name} vs {label}")


def test_a_missing_optional_package_is_noted_or_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    ref = get_model_entry("vit").reference(torch.device("cpu"))
    assert list(ref.theirs) == ["torchvision"]
    assert ref.skipped == ["vit vs timm: timm is not installed (pip install -e '.[bench]')"]
    for name in ("gpt", "decision_transformer"):
        with pytest.raises(ImportError):
            get_model_entry(name).reference(torch.device("cpu"))


def test_importing_the_models_imports_no_optional_package():
    code = "import sys, zoo, baselines; print(sorted({'timm', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
