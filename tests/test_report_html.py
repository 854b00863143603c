"""report.html: one self-contained page (no network), its tables, links and figures; then the page in
a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright sorts a column, filters
the rows, hovers a point and sees no console error. Hand-made records, as in test_report.py.

Without Chromium or Playwright the browser tests skip, except where ``ZOO_REQUIRE_BROWSER`` is set
(``.ci/run`` sets it after installing both), where they fail."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness import report
from harness.records import load_outcomes, read_record_files, record_path, write_record
from harness.report_html import figure_learning_curves, figure_metric_vs_cost, record_links
from harness import leaderboard
from test_report import record

CHROMIUM = os.environ.get("ZOO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # a closed network: no calls home at start


def write_results(out: Path) -> list[dict]:
    """A results folder as a sweep leaves it: vision (vit, resnet, 3 seeds each, with per-item
    outcomes) and rl (a return-conditioning table), the records and their items under runs/."""
    rng = np.random.default_rng(0)
    records = []
    for model, accuracy, params in (("vit", 0.80, 120_000), ("resnet", 0.97, 150_000)):
        for seed in range(3):
            correct = (rng.random(400) < accuracy).astype(float)
            records.append(record(model=model, seed=seed, value=float(correct.mean()), params=params,
                                  time_s=10.0 + 5 * seed + (20 if model == "vit" else 0),
                                  items={"item": np.arange(400), "value": correct, "weight": np.ones(400)}))
    table = [{"target_return": t, "achieved_return": 0.8 * t} for t in (0.0, 50.0, 100.0)]
    for model in ("decision_transformer", "bc_mlp"):
        for seed in range(2):
            records.append(record(task="cartpole-mixed", domain="rl", model=model, seed=seed, value=60.0 + seed,
                                  metric="normalized_return", family="transformer" if model.startswith("dec") else "baseline",
                                  examples={"tables": {"return_conditioning": table}},
                                  items={"item": np.arange(10), "value": 60.0 + seed + rng.normal(size=10),
                                         "weight": np.ones(10)}))
    for r in records:
        r["config_hash"] = f"{r['task']}-{r['model']}"
        write_record(record_path(out, r["domain"], r["task"], r["model"], r["size"], r["seed"], r["config_hash"]), r)
    return records


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    write_results(out)
    found = read_record_files(out / "runs")
    report.write_report([r for _, r in found], out, load_outcomes(found))
    return out / "report.html"


# ------------------------------------------------------------------------------------ the page

def test_the_page_is_self_contained(page_file):
    text = page_file.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    external = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text)
    assert external == []  # every script and style is inline: the page works offline
    assert "Plotly.newPlot" in text and "new ITable(" in text  # Plotly's figures, DataTables' tables
    assert len(text) > 4_000_000  # Plotly's own script (about 4.8 MB) is in it


def test_the_page_has_every_domain_leaderboard_the_verdicts_and_the_figures(page_file):
    text = page_file.read_text()
    for table_id in ("verdict_table", "verdict_details", "leaderboard_vision", "leaderboard_rl"):
        assert f'id="{table_id}"' in text
    # per task: metric vs parameters, vs training time, learning curves; rl also return conditioning
    assert len(re.findall(r'Plotly\.newPlot\(\s*"figure-\d+"', text)) == 3 + 4
    assert "return conditioning" in text and "seeds: " in text and "95% CI" in text


def test_every_row_links_to_its_records_and_the_links_resolve(page_file):
    text = page_file.read_text()
    links = sorted(set(re.findall(r'href=\\*"(runs/[^"\\]+\.json)\\*"', text)))
    assert len(links) == 6 + 4  # every record, once
    assert all((page_file.parent / link).is_file() for link in links)
    assert "runs/vision/digits/vit-tiny-seed0-digits-vit.json" in links


def test_record_links_are_per_row_in_seed_order():
    records = [record(model="vit", seed=s) for s in (2, 0, 1)] + [record(model="resnet", seed=0)]
    links = record_links(records)
    assert list(links) == [("vision", "digits", "vit", "tiny", "default"), ("vision", "digits", "resnet", "tiny", "default")]
    assert re.findall(r"seed (\d)", links["vision", "digits", "vit", "tiny", "default"]) == ["0", "1", "2"]


def test_figures_hover_names_the_model_seeds_value_and_interval():
    records = [record(model=m, seed=s, value=v + 0.01 * s, params=p) for m, v, p in
               (("vit", 0.9, 100_000), ("resnet", 0.95, 200_000)) for s in range(3)]
    board = leaderboard.aggregate(records)
    fig = figure_metric_vs_cost(board, "param_count")
    points = [t for t in fig.data if t.mode == "markers+text"]
    assert {t.name for t in points} == {"transformer", "baseline"}
    vit = next(t for t in points if t.name == "transformer")
    assert list(vit.customdata[0][:2]) == ["vit", 3] and vit.customdata[0][2].startswith("[0.8")
    assert "seeds: %{customdata[1]}" in vit.hovertemplate and "95% CI" in vit.hovertemplate
    assert fig.layout.xaxis.type == "log"
    assert any(t.name == "Pareto front" for t in fig.data)
    curves = figure_learning_curves(records)
    lines = [t for t in curves.data if t.mode == "lines+markers"]
    assert sorted(t.name for t in lines) == ["resnet (baseline, n=3)", "vit (transformer, n=3)"]
    assert "seeds: 3" in lines[0].hovertemplate


def test_no_records_still_writes_a_page(tmp_path):
    path = report.write_report([], tmp_path)
    assert "No successful cell records yet" in (tmp_path / "report.html").read_text()
    assert report.written(path) == f"{path} and {tmp_path / 'report.html'}"


def test_without_plotly_the_report_warns_and_does_not_claim_the_page(tmp_path, monkeypatch, capsys):
    missing = ImportError("No module named 'plotly'", name="plotly")
    monkeypatch.setattr(report, "_html_module", lambda: missing)
    path = report.write_report([], tmp_path)
    assert path.is_file() and not (tmp_path / "report.html").exists()
    assert "report.html not written: plotly is not installed" in capsys.readouterr().err
    assert report.written(path) == str(path)  # the "wrote ..." line names REPORT.md only


# --------------------------------------------------------------------------------- in a browser

@pytest.fixture(scope="module")
def browser():
    required = bool(os.environ.get("ZOO_REQUIRE_BROWSER"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        (pytest.fail if required else pytest.skip)("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        (pytest.fail if required else pytest.skip)(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, page_file):
    """The report, loaded, its tables set up; ``page.problems`` collects console errors, uncaught
    exceptions and any request that leaves the file (there must be none)."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.problems = []
    page.on("console", lambda m: m.type in ("error", "warning") and page.problems.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.on("request", lambda r: r.url.startswith(("file:", "data:", "blob:")) or page.problems.append(f"request {r.url}"))
    page.goto(page_file.as_uri(), wait_until="load")
    page.wait_for_function("""() => ['verdict_table', 'leaderboard_rl', 'leaderboard_vision']
        .every(id => document.getElementById(id)?.classList.contains('dataTable'))""", timeout=30_000)
    page.wait_for_selector(".plotly-graph-div .main-svg", timeout=30_000)
    yield page
    page.close()


def column_values(page, table: str, header: str) -> list[str]:
    """The text of column ``header`` in the visible rows of DataTable ``table``, top to bottom."""
    return page.evaluate("""([id, header]) => {
        const wrapper = document.getElementById(id).closest('.dt-container');
        const heads = [...wrapper.querySelectorAll('thead th')].map(th => th.textContent.trim());
        const i = heads.indexOf(header);
        return [...document.querySelectorAll(`#${id} tbody tr`)].map(tr => tr.cells[i].textContent.trim());
    }""", [table, header])


def test_browser_sorts_a_column_and_filters_rows(page):
    from playwright.sync_api import expect
    assert column_values(page, "leaderboard_vision", "model") == ["resnet", "vit"]  # by rank
    header = page.locator("#leaderboard_vision").locator("xpath=ancestor::div[contains(@class,'dt-container')]") \
        .locator("thead th:visible", has_text="param_count")
    header.click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert column_values(page, "leaderboard_vision", "param_count") == ["120000", "150000"]
    header.click()
    expect(header).to_have_attribute("aria-sort", "descending")
    assert column_values(page, "leaderboard_vision", "param_count") == ["150000", "120000"]
    search = page.locator("#leaderboard_rl").locator("xpath=ancestor::div[contains(@class,'dt-container')]") \
        .locator("input[type=search]")
    search.fill("bc_mlp")
    expect(page.locator("#leaderboard_rl tbody tr")).to_have_count(1)
    assert column_values(page, "leaderboard_rl", "model") == ["bc_mlp"]
    assert page.problems == []


def test_browser_the_verdict_table_leads_with_its_answer_on_screen(page):
    """At 1300 px the verdict column is on screen, without scrolling sideways: the lead table has the
    task, the coordinate, A, B, the effect, the adjusted p and the verdict, and nothing else."""
    heads = page.evaluate("""() => [...document.getElementById('verdict_table').closest('.dt-container')
        .querySelectorAll('thead th')].filter(th => th.getBoundingClientRect().height > 0)
        .map(th => [th.textContent.trim(), th.getBoundingClientRect().right])""")
    assert [h for h, _ in heads] == ["task", "coordinate", "A", "B", "A - B [95% CI]", "p (Holm)", "verdict"]
    assert all(0 < right <= 1300 for _, right in heads), heads
    assert column_values(page, "verdict_table", "task") == ["cartpole-mixed", "digits"]
    assert column_values(page, "verdict_table", "verdict") == ["no detectable difference", "resnet better"]
    assert column_values(page, "verdict_table", "coordinate") == ["tiny [headline]"] * 2
    assert page.problems == []


def test_browser_hover_shows_model_seeds_value_and_interval(page, tmp_path):
    figure = page.locator("#vision-digits ~ .figures .plotly-graph-div").first  # digits: top1 vs parameters
    figure.scroll_into_view_if_needed()
    box = figure.locator(".scatterlayer .trace .points path").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 10, y - 10)
    page.mouse.move(x, y, steps=3)  # Plotly follows the pointer's moves over the plot
    page.wait_for_selector(".hoverlayer .hovertext", timeout=5_000)
    text = page.locator(".hoverlayer .hovertext").first.text_content()
    assert re.search(r"(vit|resnet) \((transformer|baseline)\)", text)
    assert "seeds: 3" in text and "95% CI [" in text and "top1:" in text
    shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.problems == []
