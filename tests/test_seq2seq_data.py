"""Tests of the seq2seq data generators in tasks/language/seq2seq_data.py.

Targets are recomputed independently: reversal, sorting and sums in Python; dates parsed back with
``datetime.strptime`` for the numeric formats and with this file's own month and weekday tables for
the others. The brute-force test writes every date of the range in every format and checks that
no source string stands for two dates.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest


from tasks.language import seq2seq_data as sd
GENERATORS, make_splits, vocabulary = sd.GENERATORS, sd.make_splits, sd.vocabulary

TASKS = ("reverse", "sort", "addition", "dates")
SIZES = {"n_train": 2000, "n_val": 300, "n_test": 300, "n_long": 300}
SPLITS = ("train", "val", "test", "long")


@pytest.fixture(scope="module")
def splits() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Seed 0, SIZES, for every task: drawn once for the module."""
    return {name: make_splits(name, 0, **SIZES) for name in TASKS}


def digest(all_splits: dict) -> str:
    return hashlib.sha256(repr(all_splits).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# API, determinism
# ----------------------------------------------------------------------------------------------

def test_registry_and_split_names(splits):
    assert list(GENERATORS) == list(TASKS)
    for name in TASKS:
        assert list(splits[name]) == list(SPLITS)
        assert all(isinstance(s, str) and isinstance(t, str) for split in SPLITS for s, t in splits[name][split])


@pytest.mark.parametrize("name", TASKS)
def test_same_arguments_same_output_in_process(name, splits):
    assert make_splits(name, 0, **SIZES) == splits[name]
    assert make_splits(name, 1, **SIZES) != splits[name]


def test_same_output_in_a_fresh_process_with_another_hash_seed(splits):
    """A fresh interpreter with a different PYTHONHASHSEED (so a different str hashing and set order)
    draws exactly the same splits. The module is imported on its own, without the ``tasks`` package:
    it must need nothing beyond the standard library."""
    module_dir = Path(sd.__file__).resolve().parent
    code = (f"import hashlib, sys; sys.path.insert(0, {str(module_dir)!r}); import seq2seq_data as sd\n"
            f"out = {{name: sd.make_splits(name, 0, **{SIZES!r}) for name in {TASKS!r}}}\n"
            f"assert not {{'torch', 'numpy'}} & {{m.split('.')[0] for m in sys.modules}}\n"
            f"print(hashlib.sha256(repr(out).encode()).hexdigest())\n")
    hash_seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == digest(splits)


@pytest.mark.parametrize("name", ["reverse", "dates"])
def test_evaluation_splits_do_not_depend_on_n_train(name):
    small = make_splits(name, 3, n_train=10, n_val=50, n_test=50, n_long=50)
    large = make_splits(name, 3, n_train=500, n_val=50, n_test=50, n_long=50)
    for split in ("val", "test", "long"):
        assert small[split] == large[split]


# ----------------------------------------------------------------------------------------------
# split sizes, disjointness, vocabulary
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TASKS)
def test_sizes_and_disjoint_sources(name, splits):
    out = splits[name]
    expected_long = SIZES["n_long"] if name != "dates" else 0
    assert [len(out[s]) for s in SPLITS] == [SIZES["n_train"], SIZES["n_val"], SIZES["n_test"], expected_long]
    sources = [source for split in SPLITS for source, _ in out[split]]
    assert len(set(sources)) == len(sources)  # distinct within each split and across all of them


@pytest.mark.parametrize("name", TASKS)
def test_vocabulary_covers_every_character(name, splits):
    vocab = vocabulary(name)
    assert vocab == sorted(set(vocab))
    used = {c for split in SPLITS for pair in splits[name][split] for text in pair for c in text}
    assert used <= set(vocab)
    vocab.append("?")  # a copy: the module's table is unchanged
    assert "?" not in vocabulary(name)


def test_vocabularies():
    assert vocabulary("reverse") == vocabulary("sort") == list("abcdefghijklmnopqrstuvwxyz")
    assert vocabulary("addition") == list("+0123456789")
    assert {" ", ",", ".", "/", "-"} <= set(vocabulary("dates"))


# ----------------------------------------------------------------------------------------------
# reverse, sort, addition
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["reverse", "sort"])
def test_letter_tasks_targets_and_lengths(name, splits):
    out = splits[name]
    for split in SPLITS:
        low, high = (21, 25) if split == "long" else (5, 20)
        lengths = Counter(len(source) for source, _ in out[split])
        assert min(lengths) == low and max(lengths) == high
        for source, target in out[split]:
            assert re.fullmatch(r"[a-z]+", source)
            assert target == (source[::-1] if name == "reverse" else "".join(sorted(source)))
    assert max(len(s) for s, _ in out["train"]) < min(len(s) for s, _ in out["long"])


def test_addition_operands_and_sums(splits):
    out = splits["addition"]
    for split in SPLITS:
        low, high = (6, 7) if split == "long" else (1, 5)
        digits = Counter()
        for source, target in out[split]:
            match = re.fullmatch(r"(0|[1-9][0-9]*)\+(0|[1-9][0-9]*)", source)  # no leading zeros
            assert match, source
            a, b = match.groups()
            assert low <= len(a) <= high and low <= len(b) <= high
            assert target == str(int(a) + int(b))
            digits.update([len(a), len(b)])
        assert sorted(digits) == list(range(low, high + 1))
    # digit counts are uniform, so one-digit operands are about a fifth of the training operands
    train_digits = Counter(len(x) for source, _ in out["train"] for x in source.split("+"))
    assert 0.15 < train_digits[1] / (2 * SIZES["n_train"]) < 0.25
    assert max(len(s) for s, _ in out["train"]) < min(len(s) for s, _ in out["long"])


# ----------------------------------------------------------------------------------------------
# dates
# ----------------------------------------------------------------------------------------------

MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December"]
WEEKDAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTH_WORDS = {w: i + 1 for i, m in enumerate(MONTH_NAMES) for w in (m, m[:3], m[:3].upper())}
WEEKDAY_WORDS = {w: i for i, d in enumerate(WEEKDAY_NAMES) for w in (d, d[:3])}
NUMERIC_FORMATS = ["%Y/%m/%d", "%m/%d/%y", "%m/%d/%Y", "%d.%m.%Y", "%d.%m.%y", "%d-%m-%Y", "%Y%m%d"]
FIRST, LAST = date(1969, 1, 1), date(2068, 12, 31)


def two_digit_year(yy: str) -> int:
    """Python's %y rule, written out: 69..99 -> 19xx, 00..68 -> 20xx."""
    return 1900 + int(yy) if int(yy) >= 69 else 2000 + int(yy)


def suffix(day: int) -> str:
    return "th" if day in (11, 12, 13) else ["th", "st", "nd", "rd"][day % 10] if day % 10 <= 3 else "th"


def parse_numeric(source: str) -> set[date]:
    """Every date that some numeric format reads from ``source``, by ``datetime.strptime``."""
    parsed = set()
    for fmt in NUMERIC_FORMATS:
        try:
            parsed.add(datetime.strptime(source, fmt).date())
        except ValueError:
            continue
    return parsed


def parse_words(source: str) -> date:
    """A format with a month name: the day is the first number (with a correct ordinal suffix if any),
    the year the second (two digits by the %y rule); a weekday name, if any, must be the date's."""
    numbers = re.findall(r"(\d+)(st|nd|rd|th)?", source)
    words = re.findall(r"[A-Za-z]+", re.sub(r"\d+(st|nd|rd|th)?", " ", source))
    assert len(numbers) == 2, source
    (day, day_suffix), (year, year_suffix) = numbers
    assert len(year) in (2, 4) and not year_suffix, source
    months = [MONTH_WORDS[w] for w in words if w in MONTH_WORDS]
    weekdays = [WEEKDAY_WORDS[w] for w in words if w in WEEKDAY_WORDS]
    assert len(months) == 1 and len(weekdays) <= 1, source
    assert set(words) - set(MONTH_WORDS) - set(WEEKDAY_WORDS) <= {"the", "of"}, source
    parsed = date(two_digit_year(year) if len(year) == 2 else int(year), months[0], int(day))
    if day_suffix:
        assert day_suffix == suffix(parsed.day), source
    if weekdays:
        assert weekdays[0] == parsed.weekday(), source
    return parsed


def parse_date(source: str) -> date:
    if re.fullmatch(r"[0-9/.\-]+", source):
        parsed = parse_numeric(source)
        assert len(parsed) == 1, (source, parsed)  # no two numeric formats disagree
        return parsed.pop()
    return parse_words(source)


def template_pattern(template: str) -> re.Pattern:
    """A ``DATE_FORMATS`` template as a regular expression that matches what it writes."""
    fields = {"yyyy": r"\d{4}", "yy": r"\d{2}", "mm": r"\d{2}", "dd": r"\d{2}", "d": r"\d{1,2}",
              "dth": r"\d{1,2}(?:st|nd|rd|th)", "month": "|".join(MONTH_NAMES), "mon": "|".join(m[:3] for m in MONTH_NAMES),
              "MON": "|".join(m[:3].upper() for m in MONTH_NAMES), "weekday": "|".join(WEEKDAY_NAMES),
              "wd": "|".join(d[:3] for d in WEEKDAY_NAMES)}
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ..., literal
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?:{fields[p]})" for i, p in enumerate(parts)))


FORMAT_PATTERNS = {template: template_pattern(template) for template in sd.DATE_FORMATS}


def test_two_digit_year_rule_is_pythons():
    assert all(datetime.strptime(f"{yy:02d}", "%y").year == two_digit_year(f"{yy:02d}") for yy in range(100))
    assert (two_digit_year("69"), two_digit_year("99"), two_digit_year("00"), two_digit_year("68")) == (1969, 1999, 2000, 2068)


def test_dates_targets_parse_back_and_lie_in_range(splits):
    out = splits["dates"]
    assert out["long"] == [] and make_splits("dates", n_train=1, n_val=0, n_test=0, n_long=5)["long"] == []
    examples = [pair for split in SPLITS for pair in out[split]]
    for source, target in examples:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target)
        day = date.fromisoformat(target)
        assert FIRST <= day <= LAST
        assert parse_date(source) == day, (source, target)
    # every source is in exactly one format, and the sample uses every format
    formats = Counter()
    for source, _ in examples:
        matches = [template for template, pattern in FORMAT_PATTERNS.items() if pattern.fullmatch(source)]
        assert len(matches) == 1, (source, matches)
        formats[matches[0]] += 1
    assert set(formats) == set(sd.DATE_FORMATS)
    assert sum(bool(re.fullmatch(r"[0-9/.\-]+", s)) for s, _ in examples) > len(examples) / 5


def test_every_format_reads_back_at_the_edges_of_the_range():
    """The %y window's edges, leap days and every month, in every format."""
    edges = [FIRST, date(1969, 12, 31), date(1972, 2, 29), date(1999, 12, 31), date(2000, 1, 1),
             date(2000, 2, 29), date(2001, 5, 3), date(2011, 9, 11), date(2022, 8, 22), date(2068, 2, 29), LAST]
    edges += [date(2026, month, day) for month in range(1, 13) for day in (1, 2, 3, 12, 21, 23, 28)]
    assert len(sd.DATE_FORMATS) >= 15
    for day in edges:
        sources = sd.date_sources(day)
        assert len(sources) == len(set(sources)) == len(sd.DATE_FORMATS)
        for source in sources:
            assert parse_date(source) == day, source
    assert sd.date_sources(date(2026, 11, 26))[:3] == ["2026/11/26", "11/26/26", "11/26/2026"]
    assert "Thursday, 26 Nov 2026" in sd.date_sources(date(2026, 11, 26))


def test_no_source_string_stands_for_two_dates():
    """Brute force: all 36,525 dates in all formats. No string maps to two dates, no two
    (date, format) pairs give the same string (so the source space is what make_splits assumes),
    and the vocabulary covers every character."""
    target_of: dict[str, str] = {}
    day, n_days = FIRST, 0
    while day <= LAST:
        iso = day.isoformat()
        for source in sd.date_sources(day):
            assert target_of.setdefault(source, iso) == iso, (source, target_of[source], iso)
        day += timedelta(days=1)
        n_days += 1
    assert n_days == 36525
    assert len(target_of) == n_days * len(sd.DATE_FORMATS) == sd.source_space("dates")
    chars = set("".join(target_of)) | set("".join(set(target_of.values())))
    assert chars <= set(vocabulary("dates"))
    assert chars == set(vocabulary("dates"))


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

def test_value_error_when_a_split_cannot_be_filled():
    space = sd.source_space("dates")
    with pytest.raises(ValueError, match=r"dates: cannot draw 1 distinct 'train' sources.*only 0 remain"):
        make_splits("dates", n_train=1, n_val=space - 5, n_test=5, n_long=0)
    with pytest.raises(ValueError, match=r"'test'"):
        make_splits("dates", n_train=0, n_val=space, n_test=1, n_long=0)
    with pytest.raises(ValueError, match=r"'long'"):
        make_splits("reverse", n_train=0, n_val=0, n_test=0, n_long=sd.source_space("reverse", long=True) + 1)


def test_a_space_can_be_filled_exactly(monkeypatch):
    """A tiny task (three sources, one long source) fills its splits exactly and refuses one more."""
    def tiny(rng, long=False):
        source = "long" if long else rng.choice("abc")
        return source, source.upper()

    monkeypatch.setitem(sd.GENERATORS, "tiny", tiny)
    monkeypatch.setitem(sd._SPACES, "tiny", (3, 1))
    out = make_splits("tiny", 7, n_train=1, n_val=1, n_test=1, n_long=1)
    assert sorted(s for split in ("train", "val", "test") for s, _ in out[split]) == ["a", "b", "c"]
    assert out["long"] == [("long", "LONG")]
    with pytest.raises(ValueError, match="tiny: cannot draw 2 distinct 'train' sources"):
        make_splits("tiny", 7, n_train=2, n_val=1, n_test=1, n_long=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown seq2seq task 'copy'"):
        make_splits("copy", n_train=1, n_val=1, n_test=1, n_long=1)
    with pytest.raises(ValueError, match="n_val must be a non-negative int"):
        make_splits("reverse", n_train=1, n_val=-1, n_test=1, n_long=1)
    with pytest.raises(ValueError, match="unknown"):
        vocabulary("copy")
