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

Matched sizes (``--params 250k``): an entry that declares its width knob can be refitted to a
parameter budget (the Long Range Arena rule: within 10%)::

    @register_model("vit", ..., presets=VIT_PRESETS, width="dim", width_multiple="num_heads",
                    width_scales=("mlp_dim",))

    fitted = fit_to_params("vit", digits_spec, parse_param_count("250k"))  # {'dim': 88, 'mlp_dim': 176}
    model = create_model("vit", digits_spec, "tiny", **fitted)  # 254,770 parameters
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

SIZES = ("tiny", "small", "base")
FAMILIES = ("transformer", "baseline")
MODALITIES = ("image", "audio", "text", "state")
ENTRY_POINT_GROUP = "attention_zoo.models"
MAX_WIDTH = 4096  # the widest width ``fit_to_params`` tries


class RegistryError(ValueError):
    """A name that is not registered, registered twice, or not usable as asked."""


def unknown_name_error(what: str, name: str, known: list[str]) -> RegistryError:
    """'unknown model 'vti'; did you mean: vit? (known: cnn, vit)'."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return RegistryError(f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})")


@dataclass(frozen=True)
class WidthFit:
    """How ``fit_to_params`` resizes a model: the config ``key`` it searches over (an integer width),
    the ``multiple`` that width must be of (ints and names of config keys, e.g. ``"num_heads"``, whose
    values in the resolved config count; the width is a multiple of their least common multiple), and
    the config keys that ``scales`` with it, keeping their ratio to the width in the size's preset
    (e.g. ``mlp_dim``; a key that is None there, i.e. derived by the model, or that the user
    overrides, is left alone)."""

    key: str
    multiple: tuple[int | str, ...] = (1,)
    scales: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    family: str
    kinds: tuple[str, ...]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)  # training defaults, e.g. lr, weight_decay
    modalities: tuple[str, ...] | None = None  # the inputs it reads; None: any
    presets: dict[str, dict[str, Any]] | None = None  # size -> config (what ``resolve_config`` reads)
    fit: WidthFit | None = None  # the width knob of ``fit_to_params``; None: cannot be fitted

    def supports(self, kind: str, modality: str | None = None) -> bool:
        """Serves tasks of ``kind`` whose inputs are ``modality`` (None: not checked)."""
        return kind in self.kinds and (modality is None or self.modalities is None or modality in self.modalities)

    def serves(self) -> str:
        """'classification[image]' or 'seq2seq': what ``list models`` and errors show."""
        kinds = ",".join(self.kinds)
        return f"{kinds}[{','.join(self.modalities)}]" if self.modalities else kinds


_MODELS: dict[str, ModelEntry] = {}
_plugins_loaded = False


def register_model(name: str | None = None, *, family: str, kinds: str | tuple[str, ...] | list[str],
                   modalities: str | tuple[str, ...] | list[str] | None = None, description: str | None = None,
                   presets: dict[str, dict[str, Any]] | None = None, width: str | None = None,
                   width_multiple: int | str | tuple[int | str, ...] = 1, width_scales: tuple[str, ...] = (),
                   **defaults: Any) -> Callable:
    """Decorator: register a model factory (or class) under ``name`` (default: its ``__name__``).

    ``family`` is 'transformer' or 'baseline'; ``kinds`` lists the task kinds it serves and
    ``modalities`` the inputs it reads (None: any); other keywords are training defaults the harness
    uses for it (``lr``, ``weight_decay``).

    For ``fit_to_params`` (``--params``): ``presets`` is the factory's size -> config table, ``width``
    the integer config key to fit, ``width_multiple`` what that width must be a multiple of (an int, a
    config key such as ``"num_heads"``, or a tuple of them), ``width_scales`` the config keys that keep
    their ratio to the width of the size's preset (``("mlp_dim",)``). See :class:`WidthFit`.
    """
    if family not in FAMILIES:
        raise RegistryError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    kinds = (kinds,) if isinstance(kinds, str) else kinds  # one kind may be given as a plain string
    modalities = (modalities,) if isinstance(modalities, str) else modalities
    bad = sorted(set(modalities or ()) - set(MODALITIES))
    if bad:
        raise RegistryError(f"unknown modality {', '.join(bad)}; accepted: {', '.join(MODALITIES)}")
    fit = _width_fit(name, presets, width, width_multiple, width_scales)

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _MODELS:
            raise RegistryError(f"model {key!r} is already registered (by {_MODELS[key].factory.__module__})")
        doc = description if description is not None else (factory.__doc__ or "").strip().split("\n")[0]
        _MODELS[key] = ModelEntry(key, factory, family, tuple(kinds), doc, dict(defaults),
                                  tuple(modalities) if modalities else None, presets, fit)
        return factory

    return decorate


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


def _usable_entry(name: str, spec: dict[str, Any], size: str) -> ModelEntry:
    """The entry of ``name``, after checking that it serves ``spec``'s kind and modality at ``size``."""
    entry = get_model_entry(name)
    kind, modality = spec.get("kind"), spec.get("modality")
    if kind is not None and not entry.supports(kind, modality):
        what = f"{kind!r} tasks on {modality!r} inputs" if entry.supports(kind) else repr(kind)
        raise RegistryError(f"model {name!r} serves {entry.serves()} tasks, not {what}")
    if size not in SIZES:
        raise RegistryError(f"unknown size {size!r}; accepted: {', '.join(SIZES)}")
    return entry


def create_model(name: str, spec: dict[str, Any], size: str = "tiny", **overrides: Any) -> nn.Module:
    """Build model ``name`` for a task's ``spec`` at ``size``, with config ``overrides``."""
    return _usable_entry(name, spec, size).factory(spec, size=size, **overrides)


def resolve_config(presets: dict[str, dict[str, Any]], size: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A size's preset updated by overrides; an override that is not a config key is an error."""
    config = dict(presets[size])
    unknown = set(overrides) - set(config)
    if unknown:
        raise RegistryError(f"unknown config key(s) {', '.join(sorted(unknown))}; accepted: {', '.join(config)}")
    config.update(overrides)
    return config


# ----------------------------------------------------------------------------- matched sizes

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
_COUNT_RE = re.compile(r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)(?P<suffix>[kmgb]?)", re.IGNORECASE)
COUNT_FORMS = "a positive parameter count: 800000, 250k, 1.5M, 2e6, 1g (k = 10^3, M = 10^6, G or B = 10^9)"


def parse_param_count(text: str) -> int:
    """'250k' -> 250000, '1.5M' -> 1500000, '2e6' -> 2000000, '1g' / '1b' -> 10**9 (suffixes in any case).
    ValueError for anything else: a zero, negative or fractional count, or an unknown suffix."""
    match = _COUNT_RE.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"bad parameter count {text!r}; expected {COUNT_FORMS}")
    try:
        value = Decimal(match["number"]) * _SUFFIXES[match["suffix"].lower()]
    except InvalidOperation:  # pragma: no cover - the pattern only passes valid decimals
        raise ValueError(f"bad parameter count {text!r}; expected {COUNT_FORMS}") from None
    if value <= 0 or value != value.to_integral_value():
        raise ValueError(f"bad parameter count {text!r} (= {value:f}): not a whole number above zero; "
                         f"expected {COUNT_FORMS}")
    return int(value)


try:
    from torch.utils._device import _device_constructors

    _META_CONSTRUCTORS = frozenset(_device_constructors()) - {torch.tensor, torch.as_tensor, torch.asarray}
except ImportError:  # pragma: no cover - a torch without the private table
    _META_CONSTRUCTORS = frozenset({torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full,
                                    torch.rand, torch.randn, torch.randint, torch.randperm, torch.arange,
                                    torch.linspace, torch.logspace, torch.eye})


class _MetaFactories(TorchFunctionMode):
    """``with torch.device("meta")`` for parameter counting, except that tensors made from data
    (``torch.tensor(40)``) stay on the CPU: a model that reads such a value back while it is built
    (``.item()``, as the Conformer's front end does) builds without allocating its weights."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _META_CONSTRUCTORS and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) parameters once, as the harness counts


def fit_to_params(name: str, spec: dict[str, Any], target: int, size: str = "tiny", tolerance: float = 0.10,
                  *, max_width: int = MAX_WIDTH, **overrides: Any) -> dict[str, int]:
    """The config overrides that size model ``name`` to ``target`` parameters on ``spec``.

    Searches the entry's width knob (``register_model(width=...)``) over its allowed values (multiples
    of ``width_multiple``, up to ``max_width``), scaling the ``width_scales`` keys along, and returns
    the fitted keys, e.g. ``{"dim": 88, "mlp_dim": 176}``, of the width whose count is closest to
    ``target``: ``create_model(name, spec, size, **overrides, **fitted)`` then has a parameter count
    within ``tolerance`` (a fraction) of ``target``. ``overrides`` are the user's other config keys.

    Raises RegistryError when that is impossible (the target is below the narrowest width's count,
    above the widest's, or between two steps), when the model declares no width, or when
    ``overrides`` set the width itself.
    """
    entry = _usable_entry(name, spec, size)
    if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
        raise RegistryError(f"the parameter target must be a positive int, got {target!r}")
    if not 0 < tolerance < 1:
        raise RegistryError(f"tolerance must be a fraction in (0, 1), got {tolerance!r}")
    fit = entry.fit
    if fit is None:
        raise RegistryError(f"model {name!r} cannot be fitted to {target:,} parameters: it declares no width "
                            f"knob (register_model(..., width=CONFIG_KEY))")
    if fit.key in overrides:
        raise RegistryError(f"model {name!r}: the override {fit.key}={overrides[fit.key]!r} conflicts with fitting "
                            f"to {target:,} parameters, which sets {fit.key} itself; drop one of the two")
    if entry.presets is not None and size not in entry.presets:
        raise RegistryError(f"model {name!r} has no {size!r} preset; it has {', '.join(entry.presets)}")
    config = resolve_config(entry.presets, size, overrides) if entry.presets is not None else dict(overrides)
    step = 1
    for m in fit.multiple:
        value = config.get(m) if isinstance(m, str) else m
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RegistryError(f"model {name!r}: {m}={value!r} is not a positive int, so {fit.key} "
                                    f"cannot be made a multiple of it")
            step = math.lcm(step, value)
    top = max_width // step
    if top < 1:
        raise RegistryError(f"model {name!r}: {fit.key} must be a multiple of {step}, above the cap {max_width}")
    base = config.get(fit.key)
    ratios = {k: config[k] / base for k in fit.scales
              if k not in overrides and isinstance(config.get(k), int) and not isinstance(config.get(k), bool)
              and isinstance(base, int) and base > 0}

    def fitted(i: int) -> dict[str, int]:
        width = i * step
        return {fit.key: width, **{k: max(1, round(r * width)) for k, r in ratios.items()}}

    counts: dict[int, int] = {}
    on_meta = [True]

    def count(i: int) -> int:
        if i not in counts:
            cfg = {**overrides, **fitted(i)}
            if on_meta[0]:
                try:
                    with _MetaFactories():
                        counts[i] = _count_params(entry.factory(spec, size=size, **cfg))
                    return counts[i]
                except Exception:  # not buildable without real tensors: count on the CPU from now on
                    on_meta[0] = False
            with torch.no_grad():
                counts[i] = _count_params(entry.factory(spec, size=size, **cfg))
        return counts[i]

    # gallop from the preset's width to bracket the target, then bisect: lo < target <= hi
    start = min(max(1, round(base / step)) if isinstance(base, int) else 1, top)
    lo, hi = 0, None
    if count(start) >= target:
        hi = start
        while hi > 1:
            i = max(1, hi // 2)
            if count(i) < target:
                lo = i
                break
            hi = i
    else:
        lo = start
        while lo < top:
            i = min(top, lo * 2)
            if count(i) >= target:
                hi = i
                break
            lo = i
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(mid) >= target:
                hi = mid
            else:
                lo = mid
    candidates = [i for i in (lo, hi) if i is not None and i >= 1]
    best = min(candidates, key=lambda i: (abs(count(i) - target), i))
    got = count(best)
    if abs(got - target) <= tolerance * target:
        return fitted(best)
    width = best * step
    if hi is None:
        why = (f"the widest {fit.key} allowed ({width}, the cap {max_width}) is too small; "
               f"lower the target or deepen the model")
    elif lo == 0:
        why = (f"even the narrowest {fit.key} ({width}) is too big: the parts that do not shrink with the width "
               f"(depth, embeddings, heads) weigh more; raise the target or make the model shallower")
    else:
        why = (f"the {fit.key} steps of {step} jump over it ({fit.key}={lo * step}: {count(lo):,}, "
               f"{fit.key}={hi * step}: {count(hi):,})")
    raise RegistryError(f"cannot fit model {name!r} to {target:,} parameters within {tolerance * 100:g}%: the closest "
                        f"reachable is {got:,} ({fit.key}={width}, {(got - target) / target:+.1%}); {why}")
