"""The page's inline style sheet and script (the report is one file: no CDN, works from file://)."""

from __future__ import annotations

CSS = """
:root { --prefix: #dbe7f6; --prefix-ink: #1d3f72; --reflection: #ffe9a8; --reflection-ink: #6b4a00;
  --correction: #d4f2dc; --correction-ink: #14532d; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  margin: 0 auto; max-width: 1240px; padding: 16px 20px 60px; background: #fff; }
h1 { font-size: 22px; margin: 4px 0 2px; } h2 { font-size: 18px; margin: 28px 0 10px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; } h4 { margin: 8px 0 2px; font-size: 12px;
  text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
code, pre { font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0; background: #f6f8fa; padding: 6px 8px;
  border-radius: 4px; }
.path { color: var(--muted); font-family: ui-monospace, monospace; font-size: 12px; }
.summary { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 8px 0; padding: 0; list-style: none; }
.summary b { color: var(--muted); font-weight: 600; margin-right: 4px; }
nav a { margin-right: 14px; }
.note { color: var(--muted); font-style: italic; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 8px; }
.chart-cell { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 2px; }
.chart { display: block; width: 100%; height: auto; }
.chart .chart-title { font-size: 13px; font-weight: 600; fill: var(--ink); }
.chart .tick, .chart .axis-label { font-size: 10px; fill: var(--muted); }
.chart .axis { stroke: #8c959f; stroke-width: 1; } .chart .grid { stroke: #eaeef2; stroke-width: 1; }
.chart .series { fill: none; stroke: #0969da; stroke-width: 1.8; stroke-linejoin: round; }
.chart .marker { fill: #0969da; }
table.eval { border-collapse: collapse; margin: 6px 0 18px; }
table.eval caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.eval caption span { font-weight: 400; color: var(--muted); }
table.eval th, table.eval td { border: 1px solid var(--line); padding: 4px 10px; text-align: right; }
table.eval th:first-child, table.eval td:first-child { text-align: left; }
table.eval thead th { background: #f6f8fa; }
.evals { display: flex; flex-wrap: wrap; gap: 0 24px; align-items: flex-start; }
table.eval.compare td:last-child { font-weight: 600; }
table.times { border-collapse: collapse; margin: 6px 0 12px; }
table.times caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.times caption span { font-weight: 400; color: var(--muted); }
table.times th, table.times td { border: 1px solid var(--line); padding: 3px 10px; text-align: right; }
table.times td:first-child, table.times td:last-child, table.times th:last-child { text-align: left; }
table.times td:last-child { color: var(--muted); font-size: 12px; }
table.times thead th { background: #f6f8fa; } table.times tr.total td { font-weight: 600; }
table.times td.bar { width: 160px; } table.times td.bar span { display: block; height: 10px; background: #0969da;
  border-radius: 2px; }
.filters { position: sticky; top: 0; background: #fff; padding: 8px 0; z-index: 1; display: flex;
  flex-wrap: wrap; gap: 8px 18px; align-items: center; border-bottom: 1px solid var(--line); }
.legend span.swatch { display: inline-block; padding: 1px 8px; border-radius: 3px; margin-right: 6px; }
.span-prefix, .swatch.span-prefix { background: var(--prefix); color: var(--prefix-ink); }
.span-reflection, .swatch.span-reflection { background: var(--reflection); color: var(--reflection-ink);
  font-style: italic; }
.span-correction, .swatch.span-correction { background: var(--correction); color: var(--correction-ink); }
.construction { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 10px 0; }
.construction[hidden] { display: none; }
.construction > header { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600;
  background: #eaeef2; }
.badge.right { background: #1a7f37; color: #fff; } .badge.wrong { background: #cf222e; color: #fff; }
.badge.pos { background: #dafbe1; color: #116329; } .badge.neg { background: #ffebe9; color: #a40e26; }
.pair { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 1fr); gap: 0 14px; align-items: start; }
.pair:has(details) { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
.meta { color: var(--muted); font-size: 12px; }
details > summary { cursor: pointer; color: #0969da; margin-top: 6px; }
pre.trajectory { background: #fff; border: 1px solid var(--line); }
"""

# Filters: step and reward, pre-set from the URL hash (report.html#step=3&reward=wrong), which
# they keep up to date so a filtered view can be shared.
JS = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('article.construction'));
  var stepSelect = document.getElementById('filter-step');
  var rewardSelect = document.getElementById('filter-reward');
  var counter = document.getElementById('shown-count');
  if (!stepSelect || !rewardSelect || !counter) { return; }
  function has(select, value) {
    return Array.prototype.some.call(select.options, function (o) { return o.value === value; });
  }
  function readHash() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
    var step = params.get('step'), reward = params.get('reward');
    if (step !== null && has(stepSelect, step)) { stepSelect.value = step; }
    if (reward !== null && has(rewardSelect, reward)) { rewardSelect.value = reward; }
  }
  function apply() {
    var step = stepSelect.value, reward = rewardSelect.value, shown = 0;
    cards.forEach(function (card) {
      var visible = (step === 'all' || card.dataset.step === step) &&
                    (reward === 'all' || card.dataset.outcome === reward);
      card.hidden = !visible;
      if (visible) { shown += 1; }
    });
    counter.textContent = 'Showing ' + shown + ' of ' + cards.length + ' constructions';
    counter.dataset.shown = String(shown);
  }
  function writeHash() {
    var hash = '#step=' + encodeURIComponent(stepSelect.value) + '&reward=' + encodeURIComponent(rewardSelect.value);
    try { history.replaceState(null, '', hash); } catch (e) { /* some file:// contexts refuse; filters still work */ }
  }
  stepSelect.addEventListener('change', function () { apply(); writeHash(); });
  rewardSelect.addEventListener('change', function () { apply(); writeHash(); });
  window.addEventListener('hashchange', function () { readHash(); apply(); });
  readHash();
  apply();
})();
"""
