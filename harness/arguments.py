"""The value types of the command line: each parses its text or says, in one line, what it expected."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from zoo.sizing import parse_param_count


def number(convert: type, accept: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text and check it, else 'expected <wanted>, got ...'."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: v > 0 and v != float("inf"), "a positive number")
non_negative_float = number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
probability = number(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def model_pair(text: str) -> tuple[str, str]:
    """'vit,resnet' -> ('vit', 'resnet')."""
    items = [t.strip() for t in text.split(",")]
    if len(items) != 2 or not all(items):
        raise argparse.ArgumentTypeError(f"expected two model names A,B, got {text!r}")
    return items[0], items[1]


def param_target(text: str) -> int:
    try:
        return parse_param_count(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def param_targets(text: str) -> list[int]:
    """'50k,200k,800k' -> [50000, 200000, 800000]: the --params grid, in the order given."""
    return [param_target(t.strip()) for t in text.split(",") if t.strip()] or [param_target(text)]


def fraction(text: str) -> float:
    value = number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")(text)
    return float(value)


def fractions(text: str) -> list[float]:
    """'0.1,0.3,1' -> [0.1, 0.3, 1.0]: the --train-fraction grid."""
    return [fraction(t.strip()) for t in text.split(",") if t.strip()] or [fraction(text)]


def names(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def folder(text: str) -> Path:
    """A folder to write results to; empty text is refused (it would mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r} (for the current folder, give '.')")
    return Path(text)


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text
