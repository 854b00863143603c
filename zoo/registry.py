"""The model registry: every architecture of every package joins the zoo here.

    @register_model("vit", family="transformer", kinds=("classification",))
    def vit(spec, size="tiny", **overrides) -> nn.Module: ...

    model = create_model("vit", spec, size="tiny", depth=2)
    list_models("vi*")  # ['vit']

A registered factory takes the task's ``spec`` (a dict: ``kind`` plus what the kind needs, e.g.
``input_shape`` and ``num_classes`` for classification), a ``size`` ('tiny', 'small', 'base') and
keyword overrides of the size's configuration, and returns an ``nn.Module``.

One kind can come in several input *modalities* (``classification`` of images and of audio
features): an entry may list the ``modalities`` it reads (see ``MODALITIES``); one that lists none
reads any. A task's spec names its modality under ``"modality"``.

Models outside this repository join in two ways without editing it: import a module that registers
them (``python -m harness run vision --plugin my_models``), or declare an entry point in the group
``attention_zoo.models`` of an installed distribution; those are loaded on first use of the registry.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

SIZES = ("tiny", "small", "base")
FAMILIES = ("transformer", "baseline")
MODALITIES = ("image", "audio", "text", "state")
ENTRY_POINT_GROUP = "attention_zoo.models"


class RegistryError(ValueError):
    """A name that is not registered, registered twice, or not usable as asked."""


def unknown_name_error(what: str, name: str, known: list[str]) -> RegistryError:
    """'unknown model 'vti'; did you mean: vit? (known: cnn, vit)'."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return RegistryError(f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    family: str
    kinds: tuple[str, ...]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)  # training defaults, e.g. lr, weight_decay
    modalities: tuple[str, ...] | None = None  # the inputs it reads; None: any

    def supports(self, kind: str, modality: str | None = None) -> bool:
        """Serves tasks of ``kind`` whose inputs are ``modality`` (None: not checked)."""
        return kind in self.kinds and (modality is None or self.modalities is None or modality in self.modalities)

    def serves(self) -> str:
        """'classification[image]' or 'seq2seq': what ``list models`` and errors show."""
        kinds = ",".join(self.kinds)
        return f"{kinds}[{','.join(self.modalities)}]" if self.modalities else kinds


_MODELS: dict[str, ModelEntry] = {}
_plugins_loaded = False


def register_model(name: str | None = None, *, family: str, kinds: tuple[str, ...] | list[str],
                   modalities: tuple[str, ...] | list[str] | None = None, description: str | None = None,
                   **defaults: Any) -> Callable:
    """Decorator: register a model factory (or class) under ``name`` (default: its ``__name__``).

    ``family`` is 'transformer' or 'baseline'; ``kinds`` lists the task kinds it serves and
    ``modalities`` the inputs it reads (None: any); other keywords are training defaults the harness
    uses for it (``lr``, ``weight_decay``).
    """
    if family not in FAMILIES:
        raise RegistryError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    bad = sorted(set(modalities or ()) - set(MODALITIES))
    if bad:
        raise RegistryError(f"unknown modality {', '.join(bad)}; accepted: {', '.join(MODALITIES)}")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _MODELS:
            raise RegistryError(f"model {key!r} is already registered (by {_MODELS[key].factory.__module__})")
        doc = description if description is not None else (factory.__doc__ or "").strip().split("\n")[0]
        _MODELS[key] = ModelEntry(key, factory, family, tuple(kinds), doc, dict(defaults),
                                  tuple(modalities) if modalities else None)
        return factory

    return decorate


def load_plugins() -> None:
    """Import every module declared in the ``attention_zoo.models`` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def load_plugin(module: str) -> None:
    """Import ``module`` so that its ``@register_model`` decorators run."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            raise RegistryError(f"plugin module {module!r} not found on the Python path") from None
        raise


def get_model_entry(name: str) -> ModelEntry:
    load_plugins()
    if name not in _MODELS:
        raise unknown_name_error("model", name, list(_MODELS))
    return _MODELS[name]


def list_models(pattern: str = "*", *, kind: str | None = None, family: str | None = None,
                modality: str | None = None) -> list[str]:
    """Sorted names matching the wildcard ``pattern`` (and serving ``kind`` on ``modality``, of ``family``)."""
    load_plugins()
    return sorted(n for n, e in _MODELS.items() if fnmatch.fnmatchcase(n, pattern)
                  and (kind is None or e.supports(kind, modality)) and (family is None or e.family == family))


def create_model(name: str, spec: dict[str, Any], size: str = "tiny", **overrides: Any) -> nn.Module:
    """Build model ``name`` for a task's ``spec`` at ``size``, with config ``overrides``."""
    entry = get_model_entry(name)
    kind, modality = spec.get("kind"), spec.get("modality")
    if kind is not None and not entry.supports(kind, modality):
        what = f"{kind!r} tasks on {modality!r} inputs" if entry.supports(kind) else repr(kind)
        raise RegistryError(f"model {name!r} serves {entry.serves()} tasks, not {what}")
    if size not in SIZES:
        raise RegistryError(f"unknown size {size!r}; accepted: {', '.join(SIZES)}")
    return entry.factory(spec, size=size, **overrides)


def resolve_config(presets: dict[str, dict[str, Any]], size: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A size's preset updated by overrides; an override that is not a config key is an error."""
    config = dict(presets[size])
    unknown = set(overrides) - set(config)
    if unknown:
        raise RegistryError(f"unknown config key(s) {', '.join(sorted(unknown))}; accepted: {', '.join(config)}")
    config.update(overrides)
    return config
