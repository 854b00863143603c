"""One table of how each family of models is drawn, in every figure of REPORT.md (matplotlib) and
report.html (Plotly): its colour and its models' shades, marker and line. A family without an entry
(a plugin's own) gets ``OTHER``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    colours: tuple[str, ...]  # the family's colour first, then one shade per further model
    marker: str  # matplotlib marker
    symbol: str  # Plotly marker symbol
    line: str  # matplotlib line style
    dash: str  # Plotly dash

    @property
    def colour(self) -> str:
        return self.colours[0]


STYLES = {
    "transformer": Style(("#1f77b4", "#17becf", "#9467bd", "#000080", "#7b68ee"), "o", "circle", "-", "solid"),
    "ssm": Style(("#2ca02c", "#006400", "#98df8a", "#bcbd22", "#556b2f"), "D", "diamond", "-.", "dashdot"),
    "baseline": Style(("#ff7f0e", "#d62728", "#8c564b", "#daa520", "#e377c2"), "s", "square", "--", "dash"),
}
OTHER = Style(("#7f7f7f", "#4d4d4d", "#a9a9a9", "#696969", "#c0c0c0"), "^", "triangle-up", ":", "dot")


def style(family: str) -> Style:
    return STYLES.get(family, OTHER)


class Shades:
    """Per figure: each model of a family gets the next of its family's colours."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def next(self, family: str) -> str:
        colours = style(family).colours
        k = self.used.get(family, 0)
        self.used[family] = k + 1
        return colours[k % len(colours)]
