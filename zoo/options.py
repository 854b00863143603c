"""Options, declared once with ``Option``: a task's (``Task.options``) and a model's. A model's options are
the config keys of its size presets, each with its type and the values it accepts, so that ``ModelEntry.config`` can refuse a bad value (``--model-opt depth=0``) before anything
is built, in one line that names the key, what it accepts and what it got.

A key's type is its presets' value's: an int key takes integers (floats, even integral ones such as 64.0
or 1e3, bools and strings are refused: equal configurations are spelled, and hash, alike), a float key
takes ints or floats (finite ones, given as floats, so that 0 and 0.0 are the same value),
a bool key takes bools, a str key takes strings (those in its ``choices`` where declared), a tuple key
takes a tuple or list of such items. A key whose preset value is None is derived by the model (e.g.
``mlp_dim=None``: 4 x the width): it takes None, or an integer (a number where its declared bounds are
floats). What values are accepted:

- integer keys, and the integer items of tuple keys: >= 1 unless declared otherwise (sizes, counts,
  kernels, strides: a model with no layers or a zero width is not a model); a tuple is not empty;
- ``bounds={"dropout": Range(0.0, 1.0, max_open=True)}`` (or the pair ``(0.0, 1.0)``, half-open as a
  Python range): a number's range, odd integers with ``Range(..., odd=True)``, the number of a tuple's
  items with ``Range(..., length=2)``;
- ``choices={"activation": ("relu", "gelu")}``: the values a key takes (None among them if it takes None).

Keys with values of another type (a dict, an object) are not checked. What depends on two keys (num_heads
dividing dim) or on the task (a patch size dividing the image) stays with the model, which raises
ValueError when it is built.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import KW_ONLY, dataclass
from typing import Any

DERIVED = "None (derived by the model)"
_REFUSED = object()  # what ``Option._scalar`` returns for a value it does not accept
TYPE_NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "bools")}


def fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Range:
    """The numbers a key accepts: ``min <= x <= max`` (``min_open`` / ``max_open``: strict; None: no
    bound), only odd integers with ``odd``. On a tuple key the bounds are its items', and ``length`` is
    the number of items (None: any number, at least one)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    odd: bool = False
    length: int | None = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"Range: min {self.min} is above max {self.max}")

    @classmethod
    def of(cls, bounds: Range | tuple) -> Range:
        """A Range as it is; a (min, max) pair as the half-open [min, max) (None: no bound)."""
        if isinstance(bounds, Range):
            return bounds
        if (isinstance(bounds, tuple) and len(bounds) == 2
                and all(b is None or (_number(b) is not None) for b in bounds)):
            return cls(bounds[0], bounds[1], max_open=bounds[1] is not None)
        raise ValueError(f"must be a Range or a (min, max) pair, got {bounds!r}")

    def contains(self, x: float) -> bool:
        return not ((self.min is not None and (x < self.min or (self.min_open and x == self.min)))
                    or (self.max is not None and (x > self.max or (self.max_open and x == self.max)))
                    or (self.odd and x % 2 != 1))

    def describe(self, integer: bool) -> str:
        """'>= 1', 'in [0, 1)', '< 10' ('' without bounds)."""
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return f"in {'(' if self.min_open else '['}{fmt_number(lo)}, {fmt_number(hi)}{')' if self.max_open else ']'}"
        if lo is not None:
            return f"{'>' if self.min_open else '>='} {fmt_number(lo)}"
        if hi is not None:
            return f"{'<' if self.max_open else '<='} {fmt_number(hi)}"
        return ""


POSITIVE = Range(1)  # the default of integer keys
DROPOUT = Range(0.0, 1.0, max_open=True)  # a probability of dropping: 1 would drop everything


def _integer(value: Any) -> int | None:
    """``value`` as an int, or None when it is not an integer (bools and floats, integral ones too, are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")  # how text spells a bool


@dataclass(frozen=True)
class Option:
    """One option, declared once: a model's config key (``declare`` makes them from the size presets)
    or a task's option (``Task.options``). Its ``default`` (a task's; a model's presets hold its
    values), its type ``kind`` (int, float, bool, str, tuple; None: the default's type, and with no
    default not checked), the numbers it accepts (``minimum``/``maximum`` inclusive, ``above``/``below``
    exclusive, or a ``Range`` as ``bounds``: odd integers, a tuple's length), its ``choices`` (None: any
    value of the type), whether it takes None (``derived``: the model chooses), the type of a tuple's
    ``item``s, and a line of ``help``.

    ``check(key, value)`` takes a Python value (a preset, a parsed --model-opt, TOML); ``parse(value)``
    also reads text (--task-opt): a bool reads true/false, 1/0, yes/no, on/off, and an int takes
    integers only ('1000000', not '1e6' or '5.0': equal configurations are spelled, and hash, alike).
    Both refuse with what is accepted and what was given."""

    default: Any = None
    _: KW_ONLY
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple | None = None
    help: str = ""
    kind: type | None = None
    bounds: Range | None = None
    derived: bool = False
    item: type | None = None

    @property
    def type(self) -> type | None:
        """The option's type: ``kind``, else its default's (None: any value)."""
        return self.kind if self.kind is not None else type(self.default) if self.default is not None else None

    @property
    def range(self) -> Range | None:
        """``bounds``, or the Range that ``minimum``/``maximum``/``above``/``below`` state (None: no bounds)."""
        if self.bounds is not None or all(b is None for b in (self.minimum, self.maximum, self.above, self.below)):
            return self.bounds
        return Range(self.minimum if self.minimum is not None else self.above,
                     self.maximum if self.maximum is not None else self.below,
                     min_open=self.minimum is None and self.above is not None,
                     max_open=self.maximum is None and self.below is not None)

    def accepted(self) -> str:
        """What the option accepts, in words: 'an integer >= 1', 'a number in [0, 1)', 'one of 'relu', 'gelu''."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = self._accepted()
        return f"{DERIVED} or {what}" if self.derived else what

    def _accepted(self) -> str:
        kind = self.type
        if kind is None:
            return "any value"
        if kind is bool:
            return "true or false"
        if kind is str:
            return "a string"
        number = self.item if kind is tuple else kind
        one, many = TYPE_NOUNS.get(number, (_article(number) if number is not None else "a value", "values"))
        rng = self.range or Range()
        bounds = rng.describe(number is int)
        if rng.odd:
            one, many = "an odd integer", "odd integers"
        if kind is tuple:
            count = f"a tuple of {rng.length}" if rng.length is not None else "a non-empty tuple of"
            return " ".join(filter(None, (count, many, bounds)))
        return " ".join(filter(None, (one, bounds)))

    def check(self, key: str, value: Any) -> Any:
        """``value`` as the model takes it (an int as a float where a number goes); ValueError "KEY must be
        ACCEPTED, got VALUE" when it is not accepted (a float where an integer goes, 2.0 too)."""
        ok, converted = self._convert(value)
        if not ok:
            raise ValueError(f"{key} must be {self.accepted()}, got {value!r}")
        return converted

    def parse(self, value: Any) -> Any:
        """``value`` (a Python value, or text) as the option's type, within its range; else
        ValueError('must be ..., got ...')."""
        try:
            ok, parsed = self._convert(self._from_text(value))
        except (TypeError, ValueError, OverflowError):
            ok, parsed = False, None  # no value of the option's type
        if not ok:
            shown = value.strip() if isinstance(value, str) and _is_number_text(value) else repr(value)
            raise ValueError(f"must be {self.accepted()}, got {shown}")
        return parsed

    def _from_text(self, value: Any) -> Any:
        """A text ``value`` as the Python value it spells for this option's type, 1 and 0 as true and
        false for a bool (other values as given)."""
        kind = self.type
        if kind is bool and isinstance(value, numbers.Integral) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        if not isinstance(value, str) or kind in (str, None):
            return value
        text = value.strip()
        if kind is bool:
            return text.lower() in _TRUE if text.lower() in _TRUE + _FALSE else value
        if kind is int:
            return int(text) if _is_int_text(text) else value
        if kind is float:
            return float(text)
        return value if kind is tuple else kind(value)  # another type (a plugin's): converted as before

    def _convert(self, value: Any) -> tuple[bool, Any]:
        if value is None and (self.derived or (self.choices is not None and None in self.choices)):
            return True, None
        kind = self.type
        if self.choices is not None:
            return any(type(value) is type(c) and value == c for c in self.choices), value
        if kind is None:
            return True, value
        if kind is bool:
            return isinstance(value, bool), value
        if kind is str:
            return isinstance(value, str), value
        if kind is tuple:
            if not isinstance(value, (tuple, list)) or not value:
                return False, value
            if self.range is not None and self.range.length not in (None, len(value)):
                return False, value
            items = [self._scalar(self.item, v) for v in value]
            return all(v is not _REFUSED for v in items), type(value)(items)
        if kind not in (int, float):
            return isinstance(value, kind), value
        converted = self._scalar(kind, value)
        return converted is not _REFUSED, converted

    def _scalar(self, kind: type | None, value: Any) -> Any:
        """``value`` converted to ``kind`` (None: as it is) and in range, or ``_REFUSED``."""
        if kind in (bool, str, None):
            return value if kind is None or isinstance(value, kind) else _REFUSED
        converted = _integer(value) if kind is int else _number(value)
        if converted is None or (self.range is not None and not self.range.contains(converted)):
            return _REFUSED
        return converted


def _is_int_text(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_number_text(text: str) -> bool:  # shown as given in messages: 'got -5', not "got '-5'"
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kind(value: Any) -> type | None:
    """The option type of a preset value: bool, str, tuple (a list too), int, float, or None (not checked)."""
    for kind, types in ((bool, bool), (str, str), (tuple, (tuple, list)), (int, numbers.Integral),
                        (float, numbers.Real)):
        if isinstance(value, types):
            return kind
    return None


def _common_kind(key: str, values: list[tuple[str, Any]]) -> type | None:
    """The one type of ``key``'s (size, value) pairs (ints and floats: float); None when there are none.
    ValueError for two types."""
    kinds = [(size, _kind(v)) for size, v in values]
    found = {k for _, k in kinds}
    if found == {int, float}:
        return float
    if len(found) > 1:
        (a, ka), (b, kb) = kinds[0], next((s, k) for s, k in kinds if k is not kinds[0][1])
        raise ValueError(f"{key} is {_article(ka)} in preset {a!r} but {_article(kb)} in preset {b!r}")
    return found.pop() if found else None


def _article(kind: type | None) -> str:
    name = kind.__name__ if kind is not None else "object"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def declare(presets: dict[str, dict[str, Any]], bounds: dict[str, Any] | None = None,
            choices: dict[str, tuple] | None = None) -> dict[str, Option]:
    """The options of the config keys of ``presets`` (size -> config), with the declared ``bounds``
    (key -> Range or (min, max)) and ``choices`` (key -> values). ValueError for a declaration that
    names no key or does not fit the key's type, and for a preset value its option refuses."""
    keys = list(dict.fromkeys(k for config in presets.values() for k in config))
    for what, declared in (("bounds", bounds or {}), ("choices", choices or {})):
        unknown = [k for k in declared if k not in keys]
        if unknown:
            raise ValueError(f"{what} name no config key: {', '.join(unknown)} (config keys: {', '.join(keys)})")
    both = sorted(set(bounds or {}) & set(choices or {}))
    if both:
        raise ValueError(f"{', '.join(both)}: declare bounds or choices, not both")
    options = {key: _option(key, presets, (bounds or {}).get(key), (choices or {}).get(key)) for key in keys}
    for size, config in presets.items():
        for key, value in config.items():
            try:
                options[key].check(key, value)
            except ValueError as e:
                hint = "" if key in (bounds or {}) or key in (choices or {}) else \
                    f" (declare the range of {key}: register_model(..., bounds={{{key!r}: ...}}))"
                raise ValueError(f"preset {size!r}: {e}{hint}") from None
    return options


def _option(key: str, presets: dict[str, dict[str, Any]], bounds: Any, choices: tuple | None) -> Option:
    """The option of one key, from its preset values and its declaration."""
    values = [config[key] for config in presets.values() if key in config]
    present = [(size, config[key]) for size, config in presets.items() if config.get(key) is not None]
    derived = len(present) < len(values)
    kind = _common_kind(key, present)
    items = [(size, x) for size, v in present for x in v] if kind is tuple else []
    item = (_common_kind(f"an item of {key}", items) if items else int) if kind is tuple else None
    if bounds is not None:
        try:
            bounds = Range.of(bounds)
        except ValueError as e:
            raise ValueError(f"bounds of {key} {e}") from None
        number = item if kind is tuple else kind
        if number not in (int, float) and present:
            what = _article(number) if number is not None else _article(type(present[0][1]))
            raise ValueError(f"bounds apply to numbers, not to {key} ({what})")
        kind = kind or (float if any(isinstance(b, float) for b in (bounds.min, bounds.max)) else int)
    elif kind is None and derived and choices is None:
        kind = int  # a size or count the model derives
    if bounds is None and int in (kind, item):
        bounds = POSITIVE
    return Option(kind=kind, bounds=bounds, choices=tuple(choices) if choices is not None else None,
                  derived=derived, item=item)
