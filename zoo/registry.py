"""The model registry: every architecture of every package joins the zoo here.

    @register_model("vit", family="transformer", kinds=("classification",), presets=VIT_PRESETS)
    def vit(spec, *, dim, depth, num_heads, ...) -> nn.Module: ...

    model = create_model("vit", spec, size="tiny", depth=2)
    list_models("vi*")  # ['vit']

A registered factory takes the task's ``spec`` (a dict: ``kind`` plus what the kind needs, e.g.
``input_shape`` and ``num_classes`` for classification) and the model's configuration as keyword
arguments, and returns an ``nn.Module``. The registry finishes that configuration: an entry
registered with ``presets`` (size -> config) is called as ``factory(spec, **config)`` with the size's
preset updated by the keyword overrides (an override that is not a preset key is a RegistryError);
an entry without presets is called as ``factory(spec, **overrides)``.

One kind can come in several input *modalities* (``classification`` of images and of audio
features): an entry may list the ``modalities`` it reads (see ``MODALITIES``); one that lists none
reads any. A task's spec names its modality under ``"modality"``.

What only the model knows, the entry declares for the harness: ``extra_flops`` (work that
``torch.utils.flop_counter.FlopCounterMode`` does not see, e.g. LSTM recurrences) and ``reference``
(the implementation ``python -m harness bench`` times it against, see ``zoo.reference``).

Models outside this repository join in two ways without editing it: import a module that registers
them (``python -m harness run vision --plugin my_models``), or declare an entry point in the group
``attention_zoo.models`` of an installed distribution; those are loaded on first use of the registry.

Options: every config key of the presets has a type and a range (``zoo.options``: integer keys >= 1
unless declared otherwise, ``bounds=`` and ``choices=`` for the rest), and ``config`` refuses a bad
override in one line (``model 'vit': depth must be an integer >= 1, got 0``) before anything is built.

Matched sizes (``--params 250k``, ``zoo.sizing``): an entry that declares its width knob
(``width="dim"``, ``width_multiple="num_heads"``, ``width_scales=("mlp_dim",)``) can be refitted to a
parameter budget.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .options import Option, Range, declare

SIZES = ("tiny", "small", "base")
MODALITIES = ("image", "audio", "text", "state")
TRAINING_DEFAULTS = ("lr", "weight_decay", "warmup_frac", "grad_clip")  # what register_model takes as defaults
ENTRY_POINT_GROUP = "attention_zoo.models"

# extra_flops(model) -> a context manager that hooks the model and yields a zero-argument callable
# returning the forward FLOPs it has counted so far (hooks removed on exit)
ExtraFlops = Callable[[nn.Module], AbstractContextManager[Callable[[], int]]]


class RegistryError(ValueError):
    """A name that is not registered, registered twice, or not usable as asked."""


def unknown_name_error(what: str, name: str, known: list[str]) -> RegistryError:
    """'unknown model 'vti'; did you mean: vit? (known: cnn, vit)'."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return RegistryError(f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})")


@dataclass(frozen=True)
class WidthFit:
    """How ``zoo.sizing.fit_to_params`` resizes a model: the config ``key`` it searches over (an
    integer width), the ``multiple`` that width must be of (ints and names of config keys, e.g.
    ``"num_heads"``, whose values in the resolved config count; the width is a multiple of their least
    common multiple), and the config keys that ``scales`` with it, keeping their ratio to the width in
    the size's preset (e.g. ``mlp_dim``; a key that is None there, i.e. derived by the model, or that
    the user overrides, is left alone)."""

    key: str
    multiple: tuple[int | str, ...] = (1,)
    scales: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    family: str  # free text: 'transformer', 'baseline', or a plugin's own ('mlp', 'ssm', ...)
    kinds: tuple[str, ...]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)  # training defaults, e.g. lr, weight_decay
    size_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # size -> its own training defaults
    modalities: tuple[str, ...] | None = None  # the inputs it reads; None: any
    presets: dict[str, dict[str, Any]] | None = None  # size -> config (what ``config`` resolves)
    fit: WidthFit | None = None  # the width knob of ``zoo.sizing.fit_to_params``; None: cannot be fitted
    extra_flops: ExtraFlops | None = None  # FLOPs FlopCounterMode misses (see ``ExtraFlops``); None: none
    reference: Callable[..., Any] | None = None  # device -> zoo.reference.Reference, for the bench; None: none
    options: dict[str, Option] = field(default_factory=dict)  # config key -> its type and range (zoo.options)

    def supports(self, kind: str, modality: str | None = None) -> bool:
        """Serves tasks of ``kind`` whose inputs are ``modality`` (None: not checked)."""
        return kind in self.kinds and (modality is None or self.modalities is None or modality in self.modalities)

    def serves(self) -> str:
        """'classification[image]' or 'seq2seq': what ``list models`` and errors show."""
        kinds = ",".join(self.kinds)
        return f"{kinds}[{','.join(self.modalities)}]" if self.modalities else kinds

    def check(self, spec: dict[str, Any], size: str) -> None:
        """RegistryError unless the model serves ``spec``'s kind and modality and ``size`` is a size."""
        kind, modality = spec.get("kind"), spec.get("modality")
        if kind is not None and not self.supports(kind, modality):
            what = f"{kind!r} tasks on {modality!r} inputs" if self.supports(kind) else repr(kind)
            raise RegistryError(f"model {self.name!r} serves {self.serves()} tasks, not {what}")
        if size not in SIZES:
            raise RegistryError(f"unknown size {size!r}; accepted: {', '.join(SIZES)}")

    def config(self, size: str = "tiny", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The keyword arguments of the factory: the size's preset updated by ``overrides``, or the
        overrides alone for an entry without presets. RegistryError, in one line, for an override that
        is not a config key or whose value its option refuses (see ``zoo.options``); accepted values
        come as the model takes them (``dim=64.0`` as 64)."""
        overrides = dict(overrides or {})
        if self.presets is None:
            return overrides
        if size not in self.presets:
            raise RegistryError(f"model {self.name!r} has no {size!r} preset; it has {', '.join(self.presets)}")
        config = dict(self.presets[size])
        unknown = set(overrides) - set(config)
        if unknown:
            raise RegistryError(f"unknown config key(s) {', '.join(sorted(unknown))}; accepted: {', '.join(config)}")
        for key, value in overrides.items():
            option = self.options.get(key)
            try:
                config[key] = option.check(key, value) if option is not None else value
            except ValueError as e:
                raise RegistryError(f"model {self.name!r}: {e}") from None
        return config

    def training_defaults(self, size: str = "tiny") -> dict[str, Any]:
        """The training defaults at ``size``: the model's (``lr``, ``weight_decay``, and where it has
        its own, ``warmup_frac`` and ``grad_clip``), updated by the size's (``size_defaults``)."""
        return {**self.defaults, **self.size_defaults.get(size, {})}

    def create(self, spec: dict[str, Any], size: str = "tiny", **overrides: Any) -> nn.Module:
        """Build the model for a task's ``spec`` at ``size``, with config ``overrides``."""
        self.check(spec, size)
        return self.factory(spec, **self.config(size, overrides))


_MODELS: dict[str, ModelEntry] = {}
_plugins_loaded = False


def register_model(name: str | None = None, *, family: str, kinds: str | tuple[str, ...] | list[str],
                   modalities: str | tuple[str, ...] | list[str] | None = None, description: str | None = None,
                   presets: dict[str, dict[str, Any]] | None = None, width: str | None = None,
                   width_multiple: int | str | tuple[int | str, ...] = 1, width_scales: tuple[str, ...] = (),
                   extra_flops: ExtraFlops | None = None, reference: Callable[..., Any] | None = None,
                   bounds: dict[str, Range | tuple] | None = None, choices: dict[str, tuple] | None = None,
                   size_defaults: dict[str, dict[str, Any]] | None = None, **defaults: Any) -> Callable:
    """Decorator: register a model factory (or class) under ``name`` (default: its ``__name__``).

    ``family`` is free text ('transformer', 'baseline', a plugin's 'ssm'); ``kinds`` lists the task
    kinds it serves and ``modalities`` the inputs it reads (None: any); other keywords are training
    defaults the harness uses for it (``lr``, ``weight_decay``, and optionally ``warmup_frac`` and
    ``grad_clip``, where the task's warm-up and the harness's clip of 1.0 would be used);
    ``size_defaults`` maps a size to training defaults of its own (a paper's recipe for its size).

    ``presets`` is the size -> config table the registry resolves before calling the factory. Each
    config key is an option whose type is its preset value's (int, float, bool, str, tuple; None: derived
    by the model, which takes None or an integer) and whose accepted values are checked by ``config``
    before the factory runs (``zoo.options``): integer keys (and integer items of tuple keys) are >= 1
    unless ``bounds`` says otherwise; ``bounds`` maps a key to a ``zoo.options.Range`` (``Range(1,
    odd=True)``, ``Range(0.0, 1.0, max_open=True)``, ``Range(1, length=2)`` for a pair) or a half-open
    ``(min, max)`` pair (``(0, None)``: >= 0); ``choices`` maps a key to the values it takes (``("relu",
    "gelu")``, None among them if it takes None). Floats are finite and unbounded unless declared (a
    dropout: ``zoo.options.DROPOUT``, [0, 1)). Every preset must pass its own declaration. What depends
    on two keys or on the task stays with the model (a ValueError when it is built).
    For ``zoo.sizing.fit_to_params`` (``--params``): ``width`` the integer config key to fit,
    ``width_multiple`` what that width must be a multiple of (an int, a config key such as
    ``"num_heads"``, or a tuple of them), ``width_scales`` the config keys that keep their ratio to the
    width of the size's preset (``("mlp_dim",)``). See :class:`WidthFit`.

    ``extra_flops(model)``: see :data:`ExtraFlops`; ``reference(device)``: a ``zoo.reference.Reference``
    (may raise ImportError when the reference's package is not installed).
    """
    if not isinstance(family, str) or not family.strip():
        raise RegistryError(f"family must be a non-empty string, got {family!r}")
    kinds = (kinds,) if isinstance(kinds, str) else kinds  # one kind may be given as a plain string
    modalities = (modalities,) if isinstance(modalities, str) else modalities
    bad = sorted(set(modalities or ()) - set(MODALITIES))
    if bad:
        raise RegistryError(f"unknown modality {', '.join(bad)}; accepted: {', '.join(MODALITIES)}")
    unknown = {k for d in [defaults, *(size_defaults or {}).values()] for k in d} - set(TRAINING_DEFAULTS)
    if unknown:
        raise RegistryError(f"unknown training default(s) {', '.join(sorted(unknown))}; "
                            f"accepted: {', '.join(TRAINING_DEFAULTS)}")
    bad_sizes = set(size_defaults or {}) - set(SIZES)
    if bad_sizes:
        raise RegistryError(f"size_defaults for unknown size(s) {', '.join(sorted(bad_sizes))}; accepted: {', '.join(SIZES)}")
    fit = _width_fit(name, presets, width, width_multiple, width_scales)
    options = _options(name, presets, bounds, choices)

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _MODELS:
            raise RegistryError(f"{factory.__module__} registers model {key!r}, which is already registered (by "
                                f"{_MODELS[key].factory.__module__}); give it another name")
        doc = description if description is not None else (factory.__doc__ or "").strip().split("\n")[0]
        _MODELS[key] = ModelEntry(key, factory, family, tuple(kinds), doc, dict(defaults),
                                  {s: dict(d) for s, d in (size_defaults or {}).items()},
                                  tuple(modalities) if modalities else None, presets, fit,
                                  extra_flops=extra_flops, reference=reference, options=options)
        return factory

    return decorate


def _options(name: str | None, presets: dict[str, dict[str, Any]] | None, bounds: dict[str, Range | tuple] | None,
             choices: dict[str, tuple] | None) -> dict[str, Option]:
    """The options of the presets' config keys (none without presets), checked against the presets."""
    who = f"model {name!r}" if name else "register_model"
    if presets is None:
        if bounds or choices:
            raise RegistryError(f"{who}: bounds and choices need presets= (the config keys and their types "
                                f"are the presets')")
        return {}
    try:
        return declare(presets, bounds, choices)
    except ValueError as e:
        raise RegistryError(f"{who}: {e}") from None


def _width_fit(name: str | None, presets: dict[str, dict[str, Any]] | None, width: str | None,
               multiple: int | str | tuple[int | str, ...], scales: tuple[str, ...] | list[str]) -> WidthFit | None:
    """Check the width declaration of ``register_model`` against the presets."""
    who = f"model {name!r}" if name else "register_model"
    multiple = multiple if isinstance(multiple, (tuple, list)) else (multiple,)
    scales = (scales,) if isinstance(scales, str) else tuple(scales)
    if width is None:
        if multiple != (1,) or scales:
            raise RegistryError(f"{who}: width_multiple and width_scales need width= (the config key to fit)")
        return None
    for m in multiple:
        if isinstance(m, bool) or not (isinstance(m, str) or (isinstance(m, int) and m >= 1)):
            raise RegistryError(f"{who}: width_multiple takes positive ints and config key names, got {m!r}")
    if presets is None and (scales or any(isinstance(m, str) for m in multiple)):
        raise RegistryError(f"{who}: width_scales and config keys in width_multiple need presets= "
                            f"(their values are the presets')")
    for size, config in (presets or {}).items():
        needed = [width, *scales, *(m for m in multiple if isinstance(m, str))]
        missing = [k for k in needed if k not in config]
        if missing:
            raise RegistryError(f"{who}: preset {size!r} has no config key {', '.join(missing)} "
                                f"(declared in width / width_multiple / width_scales)")
        if not isinstance(config[width], int) or isinstance(config[width], bool):
            raise RegistryError(f"{who}: width {width!r} must be an int in every preset, "
                                f"got {config[width]!r} in {size!r}")
    return WidthFit(width, tuple(multiple), scales)


def load_plugins() -> None:
    """Import every module declared in the ``attention_zoo.models`` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except (Exception, SystemExit) as e:  # an installed plugin that breaks is named, in one line
            raise RegistryError(f"plugin entry point {ep.name!r} ({ep.value}) failed to import: "
                                f"{' '.join(f'{type(e).__name__}: {e}'.split())}") from None


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
    return get_model_entry(name).create(spec, size, **overrides)
