"""Parameter counts and matched sizes (``--params 250k``): the Long Range Arena rule, within 10%.

An entry that declares its width knob can be refitted to a parameter budget::

    @register_model("vit", ..., presets=VIT_PRESETS, width="dim", width_multiple="num_heads",
                    width_scales=("mlp_dim",))

    fitted = fit_to_params("vit", digits_spec, parse_param_count("250k"))  # {'dim': 88, 'mlp_dim': 176}
    model = create_model("vit", digits_spec, "tiny", **fitted)  # 254,770 parameters

Models are counted on the meta device (no weights are allocated), on the CPU where a model cannot be
built there: ``count_params("vit", digits_spec, depth=2)`` also checks a model's options cheaply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .registry import ModelEntry, RegistryError, WidthFit, get_model_entry

MAX_WIDTH = 4096  # the widest width ``fit_to_params`` tries

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


def _build_and_count(entry: ModelEntry, spec: dict[str, Any], config: dict[str, Any],
                     on_meta: bool) -> tuple[int, bool]:
    """(the parameter count of ``entry.factory(spec, **config)``, whether it was built on the meta
    device). ``on_meta`` False, or a model that cannot be built there: built on the CPU (no autograd)."""
    count = _count_on_meta(entry, spec, config) if on_meta else None
    if count is not None:
        return count, True
    with torch.no_grad():
        return _count_params(entry.factory(spec, **config)), False


def _count_on_meta(entry: ModelEntry, spec: dict[str, Any], config: dict[str, Any]) -> int | None:
    """The parameter count of the model built on the meta device; None where it cannot be built
    without real tensors (it is then counted on the CPU, which raises the model's real error if any)."""
    try:
        with _MetaFactories():
            return _count_params(entry.factory(spec, **config))
    except Exception:  # noqa: BLE001 - any failure here is retried, and reported, on the CPU
        return None


def count_params(name_or_entry: str | ModelEntry, spec: dict[str, Any], size: str = "tiny", **overrides: Any) -> int:
    """The parameter count of ``create_model(name, spec, size, **overrides)``, built on the meta device
    (no weights allocated; on the CPU where the model cannot be built there). Raises what building
    would: RegistryError for an unknown name, kind, size or config key, the model's own errors (e.g.
    ValueError) for options it rejects."""
    entry = get_model_entry(name_or_entry) if isinstance(name_or_entry, str) else name_or_entry
    entry.check(spec, size)
    return _build_and_count(entry, spec, entry.config(size, overrides), on_meta=True)[0]


class _Counter:
    """Memoised parameter counts of the width index ``i`` (width ``i * step``): meta-device builds until
    one fails, CPU builds from then on."""

    def __init__(self, entry: ModelEntry, spec: dict[str, Any], size: str, overrides: dict[str, Any],
                 fitted: Callable[[int], dict[str, int]]) -> None:
        self.entry, self.spec, self.size, self.overrides, self.fitted = entry, spec, size, overrides, fitted
        self.counts: dict[int, int] = {}
        self.on_meta = True

    def __call__(self, i: int) -> int:
        if i not in self.counts:
            config = self.entry.config(self.size, {**self.overrides, **self.fitted(i)})
            self.counts[i], self.on_meta = _build_and_count(self.entry, self.spec, config, self.on_meta)
        return self.counts[i]


def _check_request(entry: ModelEntry, target: int, tolerance: float, overrides: dict[str, Any]) -> WidthFit:
    """The entry's width knob, after checking the target, the tolerance and the overrides."""
    if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
        raise RegistryError(f"the parameter target must be a positive int, got {target!r}")
    if not 0 < tolerance < 1:
        raise RegistryError(f"tolerance must be a fraction in (0, 1), got {tolerance!r}")
    fit = entry.fit
    if fit is None:
        raise RegistryError(f"model {entry.name!r} cannot be fitted to {target:,} parameters: it declares no width "
                            f"knob (register_model(..., width=CONFIG_KEY))")
    if fit.key in overrides:
        raise RegistryError(f"model {entry.name!r}: the override {fit.key}={overrides[fit.key]!r} conflicts with "
                            f"fitting to {target:,} parameters, which sets {fit.key} itself; drop one of the two")
    return fit


def _width_step(name: str, fit: WidthFit, config: dict[str, Any]) -> int:
    """The least common multiple of the width's ``multiple`` (config keys read from ``config``)."""
    step = 1
    for m in fit.multiple:
        value = config.get(m) if isinstance(m, str) else m
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RegistryError(f"model {name!r}: {m}={value!r} is not a positive int, so {fit.key} "
                                    f"cannot be made a multiple of it")
            step = math.lcm(step, value)
    return step


def _bracket(count: Callable[[int], int], target: int, start: int, top: int) -> tuple[int, int | None]:
    """Gallop from index ``start`` to bracket the target, then bisect: (lo, hi) with
    count(lo) < target <= count(hi) (lo 0: even index 1 reaches it; hi None: not even ``top``)."""
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
    return lo, hi


@dataclass
class _Search:
    """What the width search ended with, for the error message."""

    name: str
    fit: WidthFit
    step: int
    max_width: int
    lo: int
    hi: int | None


def _fit_error(s: _Search, count: Callable[[int], int], best: int, target: int, tolerance: float) -> RegistryError:
    """Why no width reaches ``target`` within ``tolerance``; ``best`` is the closest width index."""
    got, width, key = count(best), best * s.step, s.fit.key
    if s.hi is None:
        why = (f"the widest {key} allowed ({width}, the cap {s.max_width}) is too small; "
               f"lower the target or deepen the model")
    elif s.lo == 0:
        why = (f"even the narrowest {key} ({width}) is too big: the parts that do not shrink with the width "
               f"(depth, embeddings, heads) weigh more; raise the target or make the model shallower")
    else:
        why = (f"the {key} steps of {s.step} jump over it ({key}={s.lo * s.step}: {count(s.lo):,}, "
               f"{key}={s.hi * s.step}: {count(s.hi):,})")
    return RegistryError(f"cannot fit model {s.name!r} to {target:,} parameters within {tolerance * 100:g}%: the "
                         f"closest reachable is {got:,} ({key}={width}, {(got - target) / target:+.1%}); {why}")


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
    entry = get_model_entry(name)
    entry.check(spec, size)
    fit = _check_request(entry, target, tolerance, overrides)
    config = entry.config(size, overrides)
    step = _width_step(name, fit, config)
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

    count = _Counter(entry, spec, size, overrides, fitted)
    start = min(max(1, round(base / step)) if isinstance(base, int) else 1, top)  # from the preset's width
    lo, hi = _bracket(count, target, start, top)
    best = min((i for i in (lo, hi) if i is not None and i >= 1), key=lambda i: (abs(count(i) - target), i))
    if abs(count(best) - target) <= tolerance * target:
        return fitted(best)
    raise _fit_error(_Search(name, fit, step, max_width, lo, hi), count, best, target, tolerance)
