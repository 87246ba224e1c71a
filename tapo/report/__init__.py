"""The run report: one static HTML page with training curves, where the time goes, constructed trajectories
and eval tables.

>>> from tapo.report import write_report
>>> # write_report("runs/tiny-tapo", evals=["runs/eval/result.json"])  -> runs/tiny-tapo/report.html
"""

from tapo.report.data import RunData, load_run
from tapo.report.page import render_page, write_report
from tapo.report.spans import TrajectorySpans, split_trajectory
from tapo.report.timing import TimeBreakdown, time_breakdown

__all__ = [
    "RunData", "TimeBreakdown", "TrajectorySpans", "load_run", "render_page", "split_trajectory", "time_breakdown",
    "write_report",
]
