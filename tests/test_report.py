"""`tapo report`: the pure pieces (spans, charts, escaping, eval tables, errors) and the page in a real browser."""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import pytest

from conftest import ROOT, run_tapo
from tapo.report import assets, charts, data, evals, page, spans, timing, viewer
from tapo.report.charts import chart_grid, line_chart, metric_series
from tapo.report.data import load_run
from tapo.report.evals import eval_table, load_eval_result
from tapo.report.page import render_page, write_report
from tapo.report.spans import split_trajectory
from tapo.report.viewer import construction_card, viewer_html

ARTIFACTS = ROOT / "test-artifacts"
TAPO_ROW = {
    "step": 1, "reward": 0.5, "accuracy": 0.5, "completions/mean_length": 20.0, "entropy": 0.4, "loss": 0.1,
    "tapo/eligible_frac": 0.75, "tapo/pairs": 6.0, "tapo/ots_w_mean": 0.3,
}
RESULT = {
    "model": "runs/tiny-tapo/model",
    "protocol": {"samples": 5, "runs": 16, "temperature": 0.6, "top_p": 0.9, "max_tokens": 512, "seed": 0},
    "benchmarks": {
        "aime25": {
            "n_problems": 30,
            "pass_at_k": {"1": {"mean": 0.625, "std": 0.0312}, "2": {"mean": 0.7, "std": 0.02}},
            "maj_at_k": {"1": {"mean": 0.6, "std": 0.01}, "2": {"mean": 0.65, "std": 0.01}},
            "avg_at_n": {"mean": 0.61, "std": 0.03},
            "mean_response_tokens": 412.4,
            "per_problem_pass_rate": {"0": 1.0},
        },
        "gsm8k": {"n_problems": 1319, "pass_at_k": {"1": {"mean": 0.1, "std": 0.0}}},
    },
}


def construction(**changes) -> dict:
    record = {
        "step": 1, "query_id": "q1", "negative_index": 3, "positive_index": 0, "strategy": "self",
        "question": "What is 2 + 3?", "answer": "5", "negative": "2 + 3 = 6. \\boxed{6}",
        "positive": "2 + 3 = 5. \\boxed{5}", "analysis": "The sum is wrong.",
        "text": "2 + 3 = 6.\nWait, 2 + 3 is 5, not 6.\nSo the answer is \\boxed{5}.",
        "prefix_tokens": 6, "reflection_start": 6, "reflection_start_char": 10, "correction_start_char": 36,
        "prefix_fidelity": 1.0, "generated_tokens": 20, "tokens": 30, "reward": 1.0, "advantage": 0.8,
        "ots_w_mean": 0.4, "extra": {},
    }
    return {**record, **changes}


def make_run(root: Path, *, metrics: list[dict], constructions: list[dict] = (), config: str | None = None) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    if constructions:
        (run / "constructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in constructions))
    if config is not None:
        (run / "config.yaml").write_text(config)
    return run


# ---- pure pieces -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [spans, charts, data, viewer, evals, page, assets, timing])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_split_uses_both_offsets():
    text = "x = 6\nWait, x is 5.\nSo 5."
    parts = split_trajectory(text, reflection_start_char=5, correction_start_char=20)
    assert (parts.prefix, parts.reflection, parts.correction) == ("x = 6", "\nWait, x is 5.\n", "So 5.")


def test_split_falls_back_to_the_reflections_first_line():
    text = "x = 6\nWait, x is 5.\nSo 5.\nDone."
    parts = split_trajectory(text, reflection_start_char=5)  # older files: no correction_start_char
    assert (parts.prefix, parts.reflection, parts.correction) == ("x = 6", "\nWait, x is 5.\n", "So 5.\nDone.")
    at_text = split_trajectory(text, reflection_start_char=6, correction_start_char=None)
    assert at_text.reflection == "Wait, x is 5.\n"
    no_newline = split_trajectory("x = 6 wait x is 5", reflection_start_char=6)
    assert (no_newline.reflection, no_newline.correction) == ("wait x is 5", "")


@pytest.mark.parametrize(
    "reflection, correction, expected",
    [
        (-3, 2, ("", "ab", "cdef")),
        (99, 100, ("abcdef", "", "")),
        (4, 1, ("abcd", "", "ef")),  # a correction before the reflection starts where the reflection does
        (2, 99, ("ab", "cdef", "")),
        (None, 3, ("", "abc", "def")),
    ],
)
def test_split_clamps_out_of_range_offsets(reflection, correction, expected):
    parts = split_trajectory("abcdef", reflection_start_char=reflection, correction_start_char=correction)
    assert (parts.prefix, parts.reflection, parts.correction) == expected


def test_split_always_gives_the_text_back():
    text = "line one\n\nline two\nline three"
    for r in range(-2, len(text) + 3):
        for c in (None, *range(-2, len(text) + 3)):
            parts = split_trajectory(text, reflection_start_char=r, correction_start_char=c)
            assert parts.prefix + parts.reflection + parts.correction == text


def test_line_chart_has_one_point_per_logged_step():
    rows = [{"step": s, "reward": s / 10} for s in range(1, 8)] + [{"step": 8}]  # step 8 did not log it
    points = metric_series(rows, "reward")
    svg = line_chart(points, title="Reward", key="reward")
    coords = re.search(r'<polyline class="series" points="([^"]+)"', svg).group(1).split()
    assert len(coords) == 7 and svg.count("<circle") == 7
    xs = [float(c.split(",")[0]) for c in coords]
    ys = [float(c.split(",")[1]) for c in coords]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # rising reward goes up the page
    assert ">Reward</text>" in svg and ">step</text>" in svg and svg.count('class="tick"') >= 6


def test_flat_and_single_point_series_still_draw():
    assert line_chart([(1, 1.0), (2, 1.0)], title="Flat", key="f").count("<circle") == 2
    assert 'points="' in line_chart([(5, 0.3)], title="One", key="one")


def test_chart_grid_leaves_out_metrics_a_grpo_run_did_not_log():
    grpo = [{"step": s, "reward": 0.1 * s, "loss": 0.2, "entropy": 0.5} for s in (1, 2, 3)]
    html = chart_grid(grpo)
    assert html.count("<svg") == 3
    assert 'data-metric="reward"' in html and "tapo/" not in html and 'data-metric="kl"' not in html
    assert "No metrics to plot" in chart_grid([{"step": 1, "grad_norm": 1.0}])


def test_card_escapes_everything_from_the_file():
    evil = "<script>alert(1)</script>"
    card = construction_card(construction(question=evil, answer="<b>5</b>", negative=evil, text=evil + "\n" + evil))
    assert "<script>" not in card and "<b>5" not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card


def test_card_shows_the_three_spans_reward_and_advantage():
    card = construction_card(construction())
    assert '<span class="span-prefix">2 + 3 = 6.</span>' in card
    assert '<span class="span-reflection">\nWait, 2 + 3 is 5, not 6.\n</span>' in card
    assert '<span class="span-correction">So the answer is \\boxed{5}.</span>' in card
    assert 'data-outcome="right"' in card and "reward 1<" in card and "advantage 0.8<" in card
    wrong = construction_card(construction(reward=0.0, advantage=-1.2))
    assert 'data-outcome="wrong"' in wrong and 'badge neg">advantage -1.2<' in wrong


def test_viewer_caps_and_says_so(tmp_path):
    records = [construction(step=s, query_id=f"q{s}") for s in range(1, 6)]
    run = make_run(tmp_path, metrics=[TAPO_ROW], constructions=records)
    loaded = load_run(run, max_constructions=2)
    assert loaded.constructions_total == 5 and [r["step"] for r in loaded.constructions] == [4, 5]
    html = viewer_html(loaded.constructions, total=loaded.constructions_total)
    assert html.count('<article class="construction"') == 2 and "holds 5 records; the last 2 are shown" in html
    assert '<option value="4">4</option><option value="5">5</option>' in html


def test_grpo_run_renders_without_constructions(tmp_path):
    run = make_run(tmp_path, metrics=[{"step": 1, "reward": 0.2, "loss": 0.1}], config="algorithm: grpo\nmodel:\n  name: m\n")
    html = render_page(load_run(run))
    assert "No constructed trajectories" in html and 'data-metric="reward"' in html
    assert "<b>algorithm</b>grpo" in html and "construction</b>" not in html


def test_header_summarises_the_config(tmp_path):
    config = "algorithm: tapo\nseed: 3\nmodel:\n  name: Qwen/Qwen3-8B\ntrainer:\n  max_steps: 500\ntapo:\n  construction: splice\n"
    run = make_run(tmp_path, metrics=[TAPO_ROW], config=config)
    html = render_page(load_run(run))
    for shown in ("<b>algorithm</b>tapo", "<b>model</b>Qwen/Qwen3-8B", "<b>construction</b>splice",
                  "<b>steps</b>1 logged / 500 planned", escape(str(run.resolve()))):
        assert shown in html


def test_default_output_is_in_the_run_directory(tmp_path):
    run = make_run(tmp_path, metrics=[TAPO_ROW], constructions=[construction()])
    path = write_report(run)
    assert path == run / "report.html" and path.read_text().startswith("<!DOCTYPE html>")


# ---- where the time goes -----------------------------------------------------------------------------


def phase_cells(html: str) -> dict[str, tuple[str, str]]:
    """phase -> (seconds, share) as the page's time table shows them."""
    rows = re.findall(r'<tr data-phase="(\w+)"[^>]*><td>\w+</td><td>([^<]*)</td><td>([^<]*)</td>', html)
    return {phase: (seconds, share) for phase, seconds, share in rows}


def test_time_table_shows_the_means_of_the_metrics_file(tmp_path):
    phases = ("rollouts", "synthesis", "score", "ots", "update")
    warmup = {"step": 1, "step_time": 100.0, **{f"tapo/time/{p}": 20.0 for p in phases}}
    steps = [  # steps 2-4, known values; step 3 constructed nothing (its phases are 0)
        {"step": 2, "step_time": 10.0, "tapo/time/rollouts": 4.0, "tapo/time/synthesis": 3.0, "tapo/time/score": 0.5,
         "tapo/time/ots": 1.0, "tapo/time/update": 1.5},
        {"step": 3, "step_time": 6.0, "tapo/time/rollouts": 5.0, "tapo/time/synthesis": 0.0, "tapo/time/score": 0.0,
         "tapo/time/ots": 0.0, "tapo/time/update": 1.0},
        {"step": 4, "step_time": 8.0, "tapo/time/rollouts": 3.0, "tapo/time/synthesis": 3.0, "tapo/time/score": 0.1,
         "tapo/time/ots": 0.5, "tapo/time/update": 1.4},
    ]
    run = make_run(tmp_path, metrics=[{**TAPO_ROW, **warmup}, *({**TAPO_ROW, **row} for row in steps)])
    write_report(run)
    html = (run / "report.html").read_text()
    cells = phase_cells(html)
    assert list(cells) == [*phases, "total"]
    for phase in phases:  # the warm-up step (all 20 s) is left out
        mean = sum(row[f"tapo/time/{phase}"] for row in steps) / 3
        assert cells[phase] == (f"{mean:.3f}", f"{mean / 8.0 * 100:.1f}%"), phase
    assert cells["total"][0] == "8.000"
    assert "3 steps (2–4); step 1, the warm-up, left out" in html and 'href="#time"' in html


def test_time_table_of_older_and_grpo_runs(tmp_path):
    older = [{"step": s, "step_time": 5.0, "tapo/time/rollouts": 2.0, "tapo/time/ots": 1.0} for s in (1, 2)]
    cells = phase_cells(render_page(load_run(make_run(tmp_path / "old", metrics=older))))
    assert cells["update"] == ("2.000", "40.0%") and cells["synthesis"] == ("0.000", "0.0%")  # update: the rest
    grpo = [{"step": s, "step_time": 2.0 * s, "reward": 0.1} for s in (1, 2, 3)]
    html = render_page(load_run(make_run(tmp_path / "grpo", metrics=grpo, config="algorithm: grpo\n")))
    assert phase_cells(html) == {"total": ("5.000", "")} and "logged its total step time only" in html
    html = render_page(load_run(make_run(tmp_path / "none", metrics=[{"step": 1, "reward": 0.1}])))
    assert "No step times in metrics.jsonl" in html


# ---- evaluation tables -------------------------------------------------------------------------------


def test_eval_table_from_a_directory_or_a_file(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps(RESULT))
    from_dir, from_file = load_eval_result(tmp_path), load_eval_result(tmp_path / "result.json")
    assert from_dir["source"] == from_file["source"] == str(tmp_path / "result.json")
    table = eval_table(from_dir)
    assert "<th>Pass@1</th><th>Pass@2</th><th>Maj@2</th><th>Avg@n</th><th>Mean tokens</th>" in table
    assert "<td>aime25</td><td>30</td><td>62.50 ± 3.12</td><td>70.00 ± 2.00</td><td>65.00 ± 1.00</td>" in table
    assert "<td>gsm8k</td><td>1319</td><td>10.00 ± 0.00</td><td>–</td>" in table
    assert "samples 5, runs 16, T 0.6, top-p 0.9" in table


def test_eval_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="result.json"):
        load_eval_result(tmp_path)
    bad = json.loads(json.dumps(RESULT))
    bad["benchmarks"]["aime25"]["pass_at_k"]["1"] = {"mean": 0.5}
    (tmp_path / "result.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"result.json: benchmarks.aime25.pass_at_k.1"):
        load_eval_result(tmp_path)


# ---- errors ------------------------------------------------------------------------------------------


def test_missing_run_dir_or_metrics_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "metrics.jsonl"))):
        load_run(tmp_path)


def test_bad_json_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path, metrics=[TAPO_ROW])
    (run / "constructions.jsonl").write_text(json.dumps(construction()) + "\n{not json\n")
    with pytest.raises(ValueError, match=re.escape(f"{run / 'constructions.jsonl'}, line 2: invalid JSON")):
        load_run(run)
    (run / "constructions.jsonl").unlink()
    (run / "metrics.jsonl").write_text(json.dumps(TAPO_ROW) + "\n" + json.dumps({"reward": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: key 'step'"):
        load_run(run)


def test_cli_reports_errors_with_exit_code_2(tmp_path):
    result = run_tapo("report", str(tmp_path / "missing"), timeout=120)
    assert result.returncode == 2 and "tapo report: error: run directory not found" in result.stderr


# ---- the page in a real browser ----------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("TAPO_REQUIRE_BROWSER") == "1":
            pytest.fail("TAPO_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH")
    return found


def browse(page_path: Path, profile: Path, *, fragment: str = "", screenshot: Path | None = None,
           height: int = 2000) -> str:
    """Load the page in headless Chromium (its scripts run); return the DOM after load, or take a screenshot
    (1280 pixels wide, `height` tall)."""
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    command += [f"--screenshot={screenshot}", f"--window-size=1280,{height}"] if screenshot else ["--dump-dom"]
    result = subprocess.run(
        [*command, page_path.resolve().as_uri() + fragment], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def shown_count(dom: str) -> int:
    match = re.search(r'id="shown-count" data-shown="(\d+)">Showing (\d+) of \d+ constructions<', dom)
    assert match, "the filter script did not run"
    return int(match.group(2))


def test_report_of_a_real_run_in_chromium(tiny_tapo_run, tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "result.json").write_text(json.dumps(RESULT))
    out = tmp_path / "page" / "report.html"
    result = run_tapo("report", str(tiny_tapo_run), "--eval", str(tmp_path / "eval"), "--output", str(out), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out}" in result.stdout and not (tiny_tapo_run / "report.html").exists()

    records = [json.loads(line) for line in (tiny_tapo_run / "constructions.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (tiny_tapo_run / "metrics.jsonl").read_text().splitlines()]
    dom = browse(out, tmp_path / "profile")
    assert shown_count(dom) == len(records) == dom.count('<article class="construction"')
    for key, title in charts.CHARTS:
        if metric_series(metrics, key):
            assert f'data-metric="{key}"' in dom and f'class="chart-title" x="52" y="17">{escape(title)}<' in dom
    assert 'data-metric="tapo/eligible_frac"' in dom and 'data-metric="reward"' in dom
    reflecting = next(r for r in records if r["reflection_start_char"] > 0)
    parts = split_trajectory(
        reflecting["text"], reflection_start_char=reflecting["reflection_start_char"],
        correction_start_char=reflecting.get("correction_start_char"),
    )
    assert parts.prefix and parts.reflection and parts.correction
    expected = "".join(
        f'<span class="span-{name}">{escape(text, quote=False)}</span>'
        for name, text in (("prefix", parts.prefix), ("reflection", parts.reflection), ("correction", parts.correction))
    )
    assert expected in dom
    assert "<td>aime25</td><td>30</td><td>62.50 ± 3.12</td>" in dom

    # Filters pre-set from the URL hash: the tiny run's constructions all end right.
    steps = sorted({r["step"] for r in records})
    assert shown_count(browse(out, tmp_path / "profile", fragment=f"#step={steps[-1]}")) == sum(
        r["step"] == steps[-1] for r in records
    )
    right = sum(r["reward"] > 0 for r in records)
    assert shown_count(browse(out, tmp_path / "profile", fragment="#reward=wrong")) == len(records) - right
    assert shown_count(browse(out, tmp_path / "profile", fragment="#reward=right")) == right

    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(out, ARTIFACTS / "report.html")
    png = ARTIFACTS / "report.png"
    png.unlink(missing_ok=True)
    browse(out, tmp_path / "profile", screenshot=png)
    assert png.is_file() and png.stat().st_size > 10_000


SPAN_COLOURS = {"prefix": "--prefix", "reflection": "--reflection", "correction": "--correction"}


def css_colour(name: str) -> tuple[int, int, int]:
    """The RGB of a CSS custom property of the page's style sheet, e.g. --prefix: #dbe7f6."""
    hex_value = re.search(rf"{name}: #([0-9a-f]{{6}});", assets.CSS).group(1)
    return tuple(int(hex_value[i : i + 2], 16) for i in (0, 2, 4))


def test_two_evaluations_side_by_side_and_three_colours_in_chromium(tiny_tapo_run, tmp_path):
    """The demo's page: the two evaluations compared in one table and shown side by side, and the constructed
    trajectories painted in three colours (pixels of a real screenshot)."""
    import matplotlib.image

    before, after = json.loads(json.dumps(RESULT)), json.loads(json.dumps(RESULT))
    before["model"], after["model"] = "runs/demo/coldstart/model", "runs/demo/tapo/model"
    after["benchmarks"]["aime25"]["pass_at_k"]["1"] = {"mean": 0.75, "std": 0.05}
    for name, result in (("before", before), ("after", after)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(result))
    out = write_report(tiny_tapo_run, evals=[tmp_path / "before", tmp_path / "after"], output=tmp_path / "page.html")
    dom = browse(out, tmp_path / "profile")
    compare = re.search(r'<table class="eval compare">.*?</table>', dom, re.S).group(0)
    assert "<th>Pass@1: runs/demo/coldstart/model</th><th>Pass@1: runs/demo/tapo/model</th>" in compare
    assert "<td>aime25</td><td>30</td><td>62.50 ± 3.12</td><td>75.00 ± 5.00</td><td>+12.50</td>" in compare
    assert "<td>gsm8k</td><td>1319</td><td>10.00 ± 0.00</td><td>10.00 ± 0.00</td><td>+0.00</td>" in compare
    evals = re.search(r'<div class="evals">(.*?)</section>', dom, re.S).group(1)
    assert evals.count('<div class="eval-cell"><table class="eval">') == 2

    png = tmp_path / "page.png"
    browse(out, tmp_path / "profile", screenshot=png, height=6000)
    pixels = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)  # [H, W, 3]
    counts = {}
    for part, name in SPAN_COLOURS.items():
        colour = css_colour(name)
        counts[part] = int(((pixels == colour).all(axis=-1)).sum())
    assert all(count > 200 for count in counts.values()), counts  # each part is painted, in its own colour
    assert len({css_colour(name) for name in SPAN_COLOURS.values()}) == 3


def test_real_constructions_show_a_visible_reflection(tiny_tapo_run):
    """The reflection span holds the words that name the mistake, not only the newline that ends the prefix."""
    records = [json.loads(line) for line in (tiny_tapo_run / "constructions.jsonl").read_text().splitlines()]
    for number, record in enumerate(records, start=1):
        if "Wait" not in record["text"]:
            continue
        parts = split_trajectory(
            record["text"], reflection_start_char=record["reflection_start_char"],
            correction_start_char=record.get("correction_start_char"),
        )
        assert "Wait" in parts.reflection, f"constructions.jsonl line {number}: reflection span {parts.reflection!r}"


def test_hostile_text_does_not_execute_in_chromium(tmp_path):
    hostile = (
        "<script>document.title='PWNED'</script><img src=x onerror=\"document.body.dataset.pwned='1'\">"
        "</pre></article><script>document.title='PWNED'</script>"
    )
    record = construction(question=hostile, analysis=hostile, text=hostile, negative=hostile, answer=hostile)
    run = make_run(tmp_path, metrics=[TAPO_ROW], constructions=[record], config=f"algorithm: tapo\nmodel:\n  name: {json.dumps(hostile)}\n")
    dom = browse(write_report(run), tmp_path / "profile")
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "data-pwned" not in dom and shown_count(dom) == 1
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom
