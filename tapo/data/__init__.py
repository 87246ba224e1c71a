"""Data for TAPO: math records and prompts, evaluation benchmarks, and the built-in arithmetic task."""

from tapo.data.arithmetic import (
    ArithmeticProblem,
    Step,
    StepDiagnosis,
    aligned_correction,
    corrupt_solution,
    diagnose_steps,
    first_wrong_step,
    generate_problems,
    make_problem,
    parse_question,
    parse_steps,
)
from tapo.data.benchmarks import BENCHMARKS, BenchmarkSpec, BenchmarkUnavailableError, load_benchmark
from tapo.data.datasets import (
    DEFAULT_INSTRUCTION,
    DataError,
    MathRecord,
    build_dataset,
    format_prompt,
    load_records,
    to_prompt_dataset,
)

__all__ = [
    "ArithmeticProblem",
    "BENCHMARKS",
    "BenchmarkSpec",
    "BenchmarkUnavailableError",
    "DEFAULT_INSTRUCTION",
    "DataError",
    "MathRecord",
    "Step",
    "StepDiagnosis",
    "aligned_correction",
    "build_dataset",
    "corrupt_solution",
    "diagnose_steps",
    "first_wrong_step",
    "format_prompt",
    "generate_problems",
    "load_benchmark",
    "load_records",
    "make_problem",
    "parse_question",
    "parse_steps",
    "to_prompt_dataset",
]
