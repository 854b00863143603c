"""Deterministic, offline generators of (source, target) string pairs for sequence-to-sequence tasks.

Pure Python and the standard library: no torch, no files, no network.

Tasks (``GENERATORS``):

- ``reverse``:  ``"hello"`` -> ``"olleh"``; lowercase a-z, length 5..20 (long split: 21..25).
- ``sort``:     ``"hello"`` -> ``"ehllo"``; lowercase a-z, length 5..20 (long split: 21..25).
- ``addition``: ``"123+4"`` -> ``"127"``; operands of 1..5 digits (long split: 6..7 digits).
- ``dates``:    ``"Thursday, 26 Nov 2026"`` -> ``"2026-11-26"``; one of ``DATE_FORMATS``, dates
  uniform over 1969-01-01..2068-12-31; no long split.

``make_splits(name, seed, n_train=..., n_val=..., n_test=..., n_long=...)`` returns
``{"train": [...], "val": [...], "test": [...], "long": [...]}``, lists of ``(source, target)``.

Determinism: every draw comes from one ``random.Random(seed)``; nothing iterates over a set or a
dict whose order could vary, so the output is the same in every process whatever
``PYTHONHASHSEED`` is (for a given Python version's ``random``). Month and weekday names are
written out here, in English, rather than taken from ``strftime`` (``%a``/``%b``/``%A``/``%B``
follow the locale).

Disjointness: every source string is distinct, within a split and across splits. The evaluation
splits are drawn first (val, test, long, then train), so they depend on ``seed``, ``n_val``,
``n_test`` and ``n_long`` but not on ``n_train``.
"""

from __future__ import annotations

import random
import string
from datetime import date, timedelta
from typing import Callable

Example = tuple[str, str]
Generator = Callable[[random.Random, bool], Example]

SPLITS = ("train", "val", "test", "long")
_DRAW_ORDER = ("val", "test", "long", "train")  # evaluation splits first: independent of n_train

LETTERS = string.ascii_lowercase
LENGTHS = (5, 20)  # reverse / sort: source lengths of train, val and test (inclusive)
LONG_LENGTHS = (21, 25)  # ... and of the long split
DIGITS = (1, 5)  # addition: digits per operand in train, val and test (inclusive)
LONG_DIGITS = (6, 7)  # ... and in the long split


# ----------------------------------------------------------------------------------------------
# reverse, sort
# ----------------------------------------------------------------------------------------------

def _letters(rng: random.Random, long: bool) -> str:
    """A string over a-z; its length uniform over ``LENGTHS`` (``LONG_LENGTHS`` if ``long``)."""
    low, high = LONG_LENGTHS if long else LENGTHS
    return "".join(rng.choices(LETTERS, k=rng.randint(low, high)))


def reverse_example(rng: random.Random, long: bool = False) -> Example:
    """``("abcde", "edcba")``: a random a-z string of 5..20 letters (21..25 if ``long``), reversed."""
    source = _letters(rng, long)
    return source, source[::-1]


def sort_example(rng: random.Random, long: bool = False) -> Example:
    """``("hello", "ehllo")``: a random a-z string of 5..20 letters (21..25 if ``long``), sorted."""
    source = _letters(rng, long)
    return source, "".join(sorted(source))


# ----------------------------------------------------------------------------------------------
# addition
# ----------------------------------------------------------------------------------------------

def _operand(rng: random.Random, long: bool) -> int:
    """A non-negative integer: its number of digits uniform over ``DIGITS`` (``LONG_DIGITS`` if
    ``long``), then its value uniform among the numbers with that many digits (1 digit: 0..9)."""
    n_digits = rng.randint(*(LONG_DIGITS if long else DIGITS))
    return rng.randrange(10 ** (n_digits - 1) if n_digits > 1 else 0, 10 ** n_digits)


def addition_example(rng: random.Random, long: bool = False) -> Example:
    """``("123+4", "127")``: ``"A+B"`` with 1..5-digit operands (6..7 if ``long``), no leading
    zeros, and the decimal sum."""
    a, b = _operand(rng, long), _operand(rng, long)
    return f"{a}+{b}", str(a + b)


def _operands(low: int, high: int) -> int:
    """How many distinct operands have ``low``..``high`` digits."""
    return 10 ** high - (10 ** (low - 1) if low > 1 else 0)


# ----------------------------------------------------------------------------------------------
# dates
# ----------------------------------------------------------------------------------------------

DATE_MIN, DATE_MAX = date(1969, 1, 1), date(2068, 12, 31)  # %y's window: 69..99 -> 19xx, 00..68 -> 20xx
N_DAYS = (DATE_MAX - DATE_MIN).days + 1  # 36,525

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")  # MONTHS[month - 1]
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")  # [date.weekday()]

# Templates for str.format_map over date_fields(); the comment shows 2026-11-26 (a Thursday).
# Numeric formats: the slash with month first is US only (MM/DD); day-first formats use "." or "-",
# year-first formats start with four digits, so no string can be read as two different dates.
# Abbreviated and full month names never share a layout ("May" is both), so every
# (date, format) gives a different string: the source space is exactly N_DAYS * len(DATE_FORMATS).
DATE_FORMATS: tuple[str, ...] = (
    "{yyyy}/{mm}/{dd}",  # 2026/11/26
    "{mm}/{dd}/{yy}",  # 11/26/26 (US)
    "{mm}/{dd}/{yyyy}",  # 11/26/2026 (US)
    "{dd}.{mm}.{yyyy}",  # 26.11.2026
    "{dd}.{mm}.{yy}",  # 26.11.26
    "{dd}-{mm}-{yyyy}",  # 26-11-2026
    "{yyyy}{mm}{dd}",  # 20261126
    "{d} {month} {yyyy}",  # 26 November 2026
    "{month} {d}, {yyyy}",  # November 26, 2026
    "{mon} {d} {yyyy}",  # Nov 26 2026
    "{dd}-{mon}-{yy}",  # 26-Nov-26
    "{wd} {d} {mon} {yyyy}",  # Thu 26 Nov 2026
    "{wd}, {d} {mon} {yyyy}",  # Thu, 26 Nov 2026
    "{weekday}, {d} {mon} {yyyy}",  # Thursday, 26 Nov 2026
    "{weekday}, {month} {d}, {yyyy}",  # Thursday, November 26, 2026
    "the {dth} of {month} {yyyy}",  # the 26th of November 2026
    "{month} {dth}, {yyyy}",  # November 26th, 2026
    "{dth} {month} {yyyy}",  # 26th November 2026
    "{d} {MON} {yyyy}",  # 26 NOV 2026
)


def ordinal(n: int) -> str:
    """``1 -> "1st"``, ``2 -> "2nd"``, ``3 -> "3rd"``, ``11 -> "11th"``, ``22 -> "22nd"``."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def date_fields(day: date) -> dict[str, str]:
    """The fields that ``DATE_FORMATS`` use, for one date (English names, locale-independent)."""
    month, weekday = MONTHS[day.month - 1], WEEKDAYS[day.weekday()]
    return {"yyyy": f"{day.year:04d}", "yy": f"{day.year % 100:02d}", "mm": f"{day.month:02d}",
            "dd": f"{day.day:02d}", "d": str(day.day), "dth": ordinal(day.day),
            "month": month, "mon": month[:3], "MON": month[:3].upper(), "weekday": weekday, "wd": weekday[:3]}


def format_date(day: date, template: str) -> str:
    """``format_date(date(2026, 11, 26), "{d} {month} {yyyy}") == "26 November 2026"``."""
    return template.format_map(date_fields(day))


def date_sources(day: date) -> list[str]:
    """The date written in every one of ``DATE_FORMATS``, in that order."""
    fields = date_fields(day)
    return [template.format_map(fields) for template in DATE_FORMATS]


def dates_example(rng: random.Random, long: bool = False) -> Example:
    """``("Thursday, 26 Nov 2026", "2026-11-26")``: a date uniform over 1969-01-01..2068-12-31 in a
    format uniform over ``DATE_FORMATS``, and the ISO date. There is no long version."""
    if long:
        raise ValueError("dates has no long split")
    day = DATE_MIN + timedelta(days=rng.randrange(N_DAYS))
    return format_date(day, rng.choice(DATE_FORMATS)), day.isoformat()


# ----------------------------------------------------------------------------------------------
# registry, vocabulary, splits
# ----------------------------------------------------------------------------------------------

GENERATORS: dict[str, Generator] = {
    "reverse": reverse_example,
    "sort": sort_example,
    "addition": addition_example,
    "dates": dates_example,
}

# How many distinct sources each task can produce: (train/val/test, long); 0: no long split.
_SPACES: dict[str, tuple[int, int]] = {
    "reverse": (sum(26 ** n for n in range(LENGTHS[0], LENGTHS[1] + 1)),
                sum(26 ** n for n in range(LONG_LENGTHS[0], LONG_LENGTHS[1] + 1))),
    "addition": (_operands(*DIGITS) ** 2, _operands(*LONG_DIGITS) ** 2),
    "dates": (N_DAYS * len(DATE_FORMATS), 0),
}
_SPACES["sort"] = _SPACES["reverse"]


def _check_name(name: str) -> None:
    if name not in GENERATORS:
        raise ValueError(f"unknown seq2seq task {name!r}; known: {', '.join(GENERATORS)}")


def source_space(name: str, long: bool = False) -> int:
    """How many distinct source strings task ``name`` can produce for train/val/test (for the long
    split if ``long``; 0 where the task has none)."""
    _check_name(name)
    return _SPACES[name][1 if long else 0]


def has_long_split(name: str) -> bool:
    """Whether task ``name`` has a length-generalisation split."""
    return source_space(name, long=True) > 0


def _date_characters() -> set[str]:
    # A leap year holds every month, weekday, day number (01..31: every digit) and ordinal suffix.
    chars = set("0123456789-")  # targets: YYYY-MM-DD
    day = date(2000, 1, 1)
    while day.year == 2000:
        chars.update(*date_sources(day))
        day += timedelta(days=1)
    return chars


_VOCABULARIES: dict[str, list[str]] = {
    "reverse": list(LETTERS),
    "sort": list(LETTERS),
    "addition": sorted("+0123456789"),
    "dates": sorted(_date_characters()),
}


def vocabulary(name: str) -> list[str]:
    """Every character that can occur in a source or target of task ``name``, sorted (a new list)."""
    _check_name(name)
    return list(_VOCABULARIES[name])


def _draw_distinct(generate: Generator, rng: random.Random, n: int, long: bool, seen: set[str]) -> list[Example]:
    """``n`` examples whose sources are not in ``seen`` nor repeated; adds them to ``seen``. The
    caller has checked that enough distinct sources remain, so this ends."""
    examples = []
    while len(examples) < n:
        source, target = generate(rng, long)
        if source not in seen:
            seen.add(source)
            examples.append((source, target))
    return examples


def make_splits(name: str, seed: int = 0, *, n_train: int, n_val: int, n_test: int,
                n_long: int) -> dict[str, list[Example]]:
    """``{"train", "val", "test", "long"}`` -> lists of ``(source, target)``, of the sizes asked
    (``"long"`` is ``[]`` for a task without a long split, whatever ``n_long``).

    Sources are distinct within and across all splits. Same arguments, same output. Raises
    ``ValueError`` for an unknown task, a negative size, or sizes that the task's space of distinct
    sources cannot fill (see ``source_space``).
    """
    _check_name(name)
    sizes = {"train": n_train, "val": n_val, "test": n_test, "long": n_long if has_long_split(name) else 0}
    for split, n in sizes.items():
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name}: n_{split} must be a non-negative int, got {n!r}")
    remaining = {False: source_space(name), True: source_space(name, long=True)}
    for split in _DRAW_ORDER:
        long = split == "long"
        if sizes[split] > remaining[long]:
            raise ValueError(f"{name}: cannot draw {sizes[split]:,} distinct {split!r} sources: the task has "
                             f"{source_space(name, long):,} possible {'long ' if long else ''}sources, and only "
                             f"{remaining[long]:,} remain after the splits drawn before it ({', '.join(_DRAW_ORDER)})")
        remaining[long] -= sizes[split]

    rng = random.Random(seed)
    seen: set[str] = set()
    drawn = {split: _draw_distinct(GENERATORS[name], rng, sizes[split], split == "long", seen)
             for split in _DRAW_ORDER}
    return {split: drawn[split] for split in SPLITS}
