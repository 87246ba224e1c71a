"""Evaluation: sampling benchmarks under the paper's protocol, Pass@k / maj@k / avg@n, and the
first-pass and error-correction analysis of responses.

- `metrics`: `pass_at_k` (unbiased), `maj_at_k`, `avg_at_n`, mean and std over runs.
- sampling itself is `tapo.sampling` (shared with the cold start, the query filter and the benchmarks).
- `run`: `evaluate`, the resumable `tapo eval` (result.json, result.md, responses.jsonl).
- `reflection`: marker-based detection of reflection in a response.
- `judge`: an LLM judge behind an OpenAI-compatible endpoint (reflects / locates / fixes).
- `analysis`: direct solution rate and effective reflection rate on boundary problems.
- `tables`: Markdown tables for one result or several side by side.
"""

from tapo.evaluation.analysis import analyze, boundary_problems, reflection_rates
from tapo.evaluation.metrics import avg_at_n, maj_at_k, majority_correct, mean_std, pass_at_k, run_metrics
from tapo.evaluation.reflection import REFLECTION_MARKERS, find_reflection, reflects
from tapo.evaluation.run import EvalProtocol, evaluate, load_result

__all__ = [
    "REFLECTION_MARKERS",
    "EvalProtocol",
    "analyze",
    "avg_at_n",
    "boundary_problems",
    "evaluate",
    "find_reflection",
    "load_result",
    "maj_at_k",
    "majority_correct",
    "mean_std",
    "pass_at_k",
    "reflection_rates",
    "reflects",
    "run_metrics",
]
