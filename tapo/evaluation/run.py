"""`tapo eval`: sample every benchmark problem n times in each of R runs, score, and report Pass@k.

Unit of work and seeding (what makes results reproducible and resumable):

- A benchmark's problems are cut into fixed blocks of `batch_size` problems, in file order. A
  *chunk* is one block in one run: key (benchmark, run, block index). Its samples come from one
  batched generation call under the seed `derive_seed(seed, benchmark, run, block)`, so a chunk
  never depends on which other chunks were done before it, or in which process.
- Chunks are written to `responses.jsonl` only when complete (see `tapo.evaluation.responses`).
  On a rerun into the same directory, every chunk already there with exactly the planned rows
  is kept, the rest is generated: an interrupted evaluation resumes and ends with the same
  numbers as an uninterrupted one. `--limit` only shortens the plan, so a quick look with
  `--limit 8` is reused by the full run (whole blocks of it).
- The directory's `eval_config.json` records the model and everything that changes the samples
  (protocol, backend, batch size, dtype, and the prompt: instruction, system prompt, chat template
  arguments such as Qwen3's `enable_thinking`); resuming with different values is an error.
  It is written only once the model has loaded and sampling is about to start: a command that
  fails on a bad model, dtype or backend leaves nothing behind that blocks the corrected one
  (and `--overwrite` deletes the old evaluation only at that point too).
- Each response row records a hash of the problem text it answers (`problem_sha`). When a
  benchmark file changed between runs, chunks whose problem text changed are sampled again,
  and responses whose gold answer changed are regraded from the stored response text (the
  samples do not depend on the gold answer), so a rerun ends with the numbers of a fresh
  evaluation of the file as it is now; both are reported on stderr.

Final numbers are computed from the rows of the planned chunks only, never from memory, so a
resumed run and an uninterrupted one are computed the same way.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tapo.evaluation.metrics import mean_std, run_metrics
from tapo.evaluation.responses import append_rows, read_responses, rewrite_rows
from tapo.sampling import Sampler, SamplingSettings, derive_seed, make_sampler, prompt_token_ids

RESULT_JSON = "result.json"
RESULT_MD = "result.md"
RESPONSES = "responses.jsonl"
EVAL_CONFIG = "eval_config.json"
PROBLEMS = "problems.jsonl"  # benchmark, problem_id, problem, answer: what the analysis and the judge read
DEFAULT_BATCH_SIZE = {"hf": 8, "vllm": 256}  # problems per chunk (each sampled `samples` times)


@dataclass(frozen=True)
class EvalProtocol:
    """The evaluation protocol; defaults are the paper's (5 samples, 16 runs, T=0.6, top-p 0.9)."""

    samples: int = 5
    runs: int = 16
    temperature: float = 0.6
    top_p: float = 0.9
    max_tokens: int = 32768
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.runs < 1:
            raise ValueError(f"samples and runs must be at least 1, got samples={self.samples} runs={self.runs}")
        SamplingSettings(self.temperature, self.top_p, self.max_tokens)  # validates the rest

    @property
    def settings(self) -> SamplingSettings:
        return SamplingSettings(self.temperature, self.top_p, self.max_tokens)


@dataclass(frozen=True)
class Chunk:
    """One unit of work: a block of problems of one benchmark in one run."""

    benchmark: str
    run: int
    index: int
    problem_ids: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class Benchmark:
    name: str  # registry name, or the file stem of a local file
    records: tuple  # MathRecord


def plan_chunks(benchmark: Benchmark, *, runs: int, batch_size: int, seed: int) -> list[Chunk]:
    """The chunks of one benchmark, run by run, blocks of `batch_size` problems in file order.

    >>> from tapo.data import MathRecord
    >>> bench = Benchmark("b", tuple(MathRecord(str(i), "q", "1") for i in range(5)))
    >>> [(c.run, c.problem_ids) for c in plan_chunks(bench, runs=2, batch_size=3, seed=0)]
    [(0, ('0', '1', '2')), (0, ('3', '4')), (1, ('0', '1', '2')), (1, ('3', '4'))]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ids = [r.id for r in benchmark.records]
    blocks = [tuple(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
    return [
        Chunk(benchmark.name, run, index, block, derive_seed(seed, benchmark.name, run, index))
        for run in range(runs)
        for index, block in enumerate(blocks)
    ]


def benchmark_key(name: str) -> str:
    """The name an evaluation files a benchmark under: its registry name (any case), else the file's stem.

    >>> benchmark_key("AIME24"), benchmark_key("data/aime24.jsonl"), benchmark_key("data/mine.parquet")
    ('aime24', 'aime24', 'mine')
    """
    from tapo.data import BENCHMARKS

    key = name if name.lower() in BENCHMARKS else Path(name).stem
    return key.lower() if key.lower() in BENCHMARKS else key


def load_benchmarks(names: Sequence[str], *, limit: int | None = None) -> list[Benchmark]:
    """Benchmarks by registry name or local file (named by the file stem); ids must be unique."""
    from tapo.data import load_benchmark

    if not names:
        raise ValueError("no benchmarks given")
    benchmarks: list[Benchmark] = []
    for name in names:
        key = benchmark_key(name)
        if any(b.name == key for b in benchmarks):
            raise ValueError(f"benchmark {key!r} is given twice (benchmarks are named by registry name or file stem)")
        records = tuple(load_benchmark(name, limit=limit))
        if not records:
            raise ValueError(f"benchmark {name!r} has no problems")
        seen: set[str] = set()
        for row, record in enumerate(records, start=1):
            if record.id in seen:
                raise ValueError(f"benchmark {name!r}: problem id {record.id!r} of row {row} is not unique")
            seen.add(record.id)
        benchmarks.append(Benchmark(key, records))
    return benchmarks


def evaluate(
    model: str,
    benchmarks: Sequence[str],
    *,
    output_dir: str | Path,
    protocol: EvalProtocol = EvalProtocol(),
    batch_size: int | None = None,
    limit: int | None = None,
    backend: str = "auto",
    dtype: str | None = None,
    instruction: str | None = None,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    sampler: Sampler | None = None,
    on_chunk: Callable[[Chunk, list[dict]], None] | None = None,
) -> dict:
    """Evaluate `model` on `benchmarks`; write result.json, result.md and responses.jsonl into `output_dir`.

    Resumes automatically when `output_dir` holds an evaluation with the same settings
    (`overwrite=True` starts afresh). The prompt is the training prompt: `instruction` (None: the
    default), `system_prompt` and `chat_template_kwargs` as the run was trained with
    (`training_prompt` reads them from its config). `sampler` replaces loading `model` (e.g. a
    model already in memory); `on_chunk(chunk, rows)` is called after each chunk is on disk.
    Returns the result dict (the schema of result.json).
    """
    from tapo.sampling import resolve_backend

    prompt = prompt_config(
        instruction=instruction, system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs
    )  # bad template arguments fail before anything is loaded
    loaded = load_benchmarks(benchmarks, limit=limit)  # bad names and rows fail before a model is loaded
    out = Path(output_dir)
    chosen = sampler.backend if sampler is not None else resolve_backend(backend)
    batch_size = batch_size or DEFAULT_BATCH_SIZE[chosen]
    config = {
        "model": model,
        "protocol": asdict(protocol),
        "engine": {"backend": chosen, "batch_size": batch_size, "dtype": dtype},
        "prompt": prompt,
    }
    if not overwrite:
        _check_config(out / EVAL_CONFIG, config)

    plan = [c for b in loaded for c in plan_chunks(b, runs=protocol.runs, batch_size=batch_size, seed=protocol.seed)]
    records = {(b.name, r.id): r for b in loaded for r in b.records}
    state = ResumeState() if overwrite else resume_state(out, plan, records, samples=protocol.samples)
    todo = [c for c in plan if (c.benchmark, c.run, c.index) not in state.done]
    if todo and sampler is None:
        # A bad model, dtype or backend fails here; nothing is recorded until it has loaded, so the
        # corrected command starts cleanly instead of meeting a config it never ran under.
        sampler = make_sampler(model, backend=chosen, dtype=dtype, seed=protocol.seed)

    if overwrite and out.exists():
        for name in (RESULT_JSON, RESULT_MD, RESPONSES, EVAL_CONFIG, PROBLEMS):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / EVAL_CONFIG).is_file():
        (out / EVAL_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    apply_resume_state(out / RESPONSES, state)
    write_problems(out / PROBLEMS, loaded)
    if todo:
        from tqdm.auto import tqdm

        tokenizer = sampler.tokenizer
        prompts: dict[tuple[str, str], list[int]] = {}
        correct = total = 0
        with tqdm(
            total=len(plan), initial=len(plan) - len(todo), desc=f"eval {model}", unit="chunk", disable=not progress
        ) as bar:
            for chunk in todo:
                for pid in chunk.problem_ids:
                    if (chunk.benchmark, pid) not in prompts:
                        problem = records[(chunk.benchmark, pid)].problem
                        prompts[(chunk.benchmark, pid)] = prompt_token_ids(tokenizer, problem, **prompt)
                rows = sample_chunk(chunk, sampler, records=records, prompts=prompts, protocol=protocol)
                append_rows(out / RESPONSES, rows)  # the chunk is on disk: an interruption from here on loses nothing
                correct += sum(r["correct"] for r in rows)
                total += len(rows)
                bar.set_postfix_str(f"{chunk.benchmark} run {chunk.run + 1}/{protocol.runs} acc {correct / total:.3f}")
                bar.update(1)
                if on_chunk is not None:
                    on_chunk(chunk, rows)

    rows, _ = read_responses(out / RESPONSES)
    result = summarize(rows, plan, model=model, protocol=protocol)
    result["engine"], result["prompt"] = config["engine"], config["prompt"]  # how the numbers were made
    (out / RESULT_JSON).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    from tapo.evaluation.tables import result_markdown

    (out / RESULT_MD).write_text(result_markdown(result), encoding="utf-8")
    return result


def prompt_config(
    *, instruction: str | None, system_prompt: str | None, chat_template_kwargs: Mapping[str, Any] | None
) -> dict:
    """The prompt settings as eval_config.json records them: one spelling for each prompt.

    The default instruction is recorded as None and an empty system prompt as none (they make the
    same prompt), so directories of earlier versions, which recorded no template arguments, resume.

    >>> from tapo.data import DEFAULT_INSTRUCTION
    >>> prompt_config(instruction=DEFAULT_INSTRUCTION, system_prompt="", chat_template_kwargs={"enable_thinking": 0})
    {'instruction': None, 'system_prompt': None, 'chat_template_kwargs': {'enable_thinking': 0}}
    """
    from tapo.data import DEFAULT_INSTRUCTION

    return {
        "instruction": None if instruction == DEFAULT_INSTRUCTION else instruction,
        "system_prompt": system_prompt or None,
        "chat_template_kwargs": template_kwargs(chat_template_kwargs, where="chat_template_kwargs"),
    }


def template_kwargs(value: Mapping[str, Any] | str | None, *, where: str) -> dict:
    """Chat template arguments as a plain dict: a mapping with string keys, or its JSON text (as TRL accepts).

    >>> template_kwargs('{"enable_thinking": false}', where="--chat-template-kwargs")
    {'enable_thinking': False}
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg}): {value!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f'{where}: expected a JSON object such as {{"enable_thinking": false}}, got {value!r}')
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of template arguments, got {value!r}")
    if not all(isinstance(key, str) for key in value):
        raise ValueError(f"{where}: keys must be strings (template variable names), got {sorted(map(repr, value))}")
    try:
        json.dumps(dict(value))  # recorded in eval_config.json
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: values must be JSON values ({error})") from None
    return dict(value)


def training_prompt(config) -> dict:
    """`evaluate`'s prompt options for a model trained under this run config (`tapo.config.RunConfig`).

    Its `data.instruction`, `data.system_prompt` and `trainer.chat_template_kwargs`, which TRL
    applies to every rollout prompt (a mapping, or its JSON text).

    >>> from tapo.config import RunConfig
    >>> training_prompt(RunConfig(trainer={"chat_template_kwargs": {"enable_thinking": False}}))["chat_template_kwargs"]
    {'enable_thinking': False}
    """
    return {
        "instruction": config.data.instruction,
        "system_prompt": config.data.system_prompt,
        "chat_template_kwargs": template_kwargs(
            config.trainer.get("chat_template_kwargs"), where="trainer.chat_template_kwargs"
        ),
    }


def sample_chunk(
    chunk: Chunk, sampler: Sampler, *, records: dict, prompts: dict, protocol: EvalProtocol
) -> list[dict]:
    """Generate and score one chunk: its response rows, problem by problem, sample by sample."""
    from tapo.rewards import extract_answer, math_reward

    ids = [prompts[(chunk.benchmark, pid)] for pid in chunk.problem_ids]
    completions = sampler.sample(ids, n=protocol.samples, seed=chunk.seed, settings=protocol.settings)
    golds = [records[(chunk.benchmark, pid)].answer for pid in chunk.problem_ids]
    texts = [c.text for group in completions for c in group]
    scores = math_reward(texts, [g for g in golds for _ in range(protocol.samples)])
    rows = []
    for i, (pid, gold, group) in enumerate(zip(chunk.problem_ids, golds, completions, strict=True)):
        sha = problem_sha(records[(chunk.benchmark, pid)].problem)
        for s, completion in enumerate(group):
            rows.append(
                {
                    "benchmark": chunk.benchmark,
                    "problem_id": pid,
                    "problem_sha": sha,
                    "run": chunk.run,
                    "sample": s,
                    "chunk": chunk.index,
                    "response": completion.text,
                    "answer": extract_answer(completion.text),
                    "gold": gold,
                    "correct": scores[i * protocol.samples + s] == 1.0,
                    "n_tokens": completion.n_tokens,
                    "finished": completion.finished,
                }
            )
    return rows


def summarize(rows: Sequence[dict], plan: Sequence[Chunk], *, model: str, protocol: EvalProtocol) -> dict:
    """The result dict (schema of result.json) from the response rows of the planned chunks."""
    planned = {(c.benchmark, c.run, c.index, pid) for c in plan for pid in c.problem_ids}
    order: dict[str, list[str]] = defaultdict(list)
    for c in plan:
        if c.run == 0:
            order[c.benchmark] += c.problem_ids
    cells: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for row in rows:
        if (row["benchmark"], row["run"], row["chunk"], row["problem_id"]) in planned:
            cells[(row["benchmark"], row["run"], row["problem_id"])].append(row)
    ks = list(range(1, protocol.samples + 1))
    benchmarks = {}
    for name, problem_ids in order.items():
        per_run = []
        for run in range(protocol.runs):
            problems = {}
            for pid in problem_ids:
                samples = sorted(cells[(name, run, pid)], key=lambda r: r["sample"])
                if [r["sample"] for r in samples] != list(range(protocol.samples)):
                    raise ValueError(f"responses of {name} problem {pid!r} run {run} are incomplete")
                problems[pid] = ([r["answer"] for r in samples], [bool(r["correct"]) for r in samples])
            per_run.append(run_metrics(problems, ks=ks))
        all_rows = [r for run in range(protocol.runs) for pid in problem_ids for r in cells[(name, run, pid)]]
        benchmarks[name] = {
            "n_problems": len(problem_ids),
            "pass_at_k": {str(k): mean_std([m["pass@k"][k] for m in per_run]) for k in ks},
            "maj_at_k": {str(k): mean_std([m["maj@k"][k] for m in per_run]) for k in ks},
            "avg_at_n": mean_std([m["avg@n"] for m in per_run]),
            "mean_response_tokens": sum(r["n_tokens"] for r in all_rows) / len(all_rows),
            "per_problem_pass_rate": {
                pid: sum(bool(r["correct"]) for run in range(protocol.runs) for r in cells[(name, run, pid)])
                / (protocol.runs * protocol.samples)
                for pid in problem_ids
            },
        }
    return {
        "model": model,
        "protocol": {k: asdict(protocol)[k] for k in ("samples", "runs", "temperature", "top_p", "max_tokens", "seed")},
        "benchmarks": benchmarks,
    }


def load_result(result_dir: str | Path) -> dict:
    """The result.json of an evaluation directory (or of a result.json path)."""
    path = Path(result_dir)
    path = path / RESULT_JSON if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULT_JSON} in {result_dir} (run `tapo eval --output {result_dir}` first)")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    for key in ("model", "protocol", "benchmarks"):
        if key not in result:
            raise ValueError(f"{path} is not an evaluation result: key {key!r} is missing")
    return result


def read_problems(path: str | Path) -> dict[tuple[str, str], str]:
    """(benchmark, problem id) -> problem text from `problems.jsonl` ({} when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in _jsonl_lines(path) if line.strip()]
    return {(r["benchmark"], r["problem_id"]): r["problem"] for r in rows}


def write_problems(path: Path, benchmarks: Sequence[Benchmark]) -> None:
    """Add these benchmarks' problems to `problems.jsonl` (kept across reruns with other benchmarks or limits)."""
    rows = {}
    if path.is_file():
        for line in _jsonl_lines(path):
            if line.strip():
                row = json.loads(line)
                rows[(row["benchmark"], row["problem_id"])] = row
    for b in benchmarks:
        for r in b.records:
            rows[(b.name, r.id)] = {"benchmark": b.name, "problem_id": r.id, "problem": r.problem, "answer": r.answer}
    rewrite_rows(path, rows.values())


def _jsonl_lines(path: Path) -> list[str]:
    """The lines of a JSONL file, split at "\\n" only: `str.splitlines` also splits at U+2028, U+2029
    and U+0085, which JSON leaves unescaped inside strings (`ensure_ascii=False`)."""
    return path.read_text(encoding="utf-8").split("\n")


def _check_config(path: Path, config: dict) -> None:
    """Refuse to mix samples made under different settings into one directory (it is written once sampling starts)."""
    if not path.is_file():
        return
    old, new = _flatten(json.loads(path.read_text(encoding="utf-8"))), _flatten(config)
    keys = sorted(old.keys() | new.keys())
    diffs = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]
    if diffs:
        raise ValueError(
            f"{path.parent} holds an evaluation with other settings ({'; '.join(diffs)}); "
            "choose another --output, or pass --overwrite to start afresh"
        )


def _flatten(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def problem_sha(problem: str) -> str:
    """A short hash of a problem's text, stored on each response row: which text the response answers.

    >>> problem_sha("What is 2 + 3?") == problem_sha("What is 2 + 3?") != problem_sha("What is 2 + 4?")
    True
    """
    return hashlib.sha256(problem.encode("utf-8")).hexdigest()[:16]


@dataclass
class ResumeState:
    """What a rerun keeps of an evaluation directory: finished chunks, and the rows to write back."""

    done: set = field(default_factory=set)  # (benchmark, run, chunk index) of the chunks kept
    rows: list | None = None  # the responses file's rows after resuming; None = the file stays as it is
    notes: list = field(default_factory=list)  # what changed since the responses were sampled, for the user


def resume_state(out: Path, plan: Sequence[Chunk], records: dict, *, samples: int) -> ResumeState:
    """Which planned chunks are finished and still valid for the benchmark files as they are now.

    A chunk is kept when its rows are exactly the planned ones and answer the problems' current
    text (the row's `problem_sha`; rows of older versions without it are checked against the
    text recorded in problems.jsonl). A chunk whose problem text changed is sampled again: its
    responses answer another question. A changed gold answer does not change what was sampled,
    so the stored responses are regraded against the new answer instead: the result is then
    the same as a fresh evaluation's, without sampling again. Partial chunks (an interruption)
    are dropped and redone.
    """
    rows, dropped = read_responses(out / RESPONSES)
    recorded = {key: problem_sha(text) for key, text in read_problems(out / PROBLEMS).items()}
    groups: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["benchmark"], row["run"], row["chunk"])].append(row)
    expected = {
        (c.benchmark, c.run, c.index): sorted((pid, s) for pid in c.problem_ids for s in range(samples)) for c in plan
    }
    state, stale = ResumeState(), set()
    changed_problems: dict[str, set[str]] = defaultdict(set)
    changed_chunks: dict[str, int] = defaultdict(int)
    for key, group in groups.items():
        if key not in expected:
            continue  # another benchmark or a longer --limit: kept, unused
        if sorted((r["problem_id"], r["sample"]) for r in group) != expected[key]:
            stale.add(key)
            continue
        moved = _answering_other_text(group, records, recorded)
        if moved:
            changed_problems[key[0]] |= moved
            changed_chunks[key[0]] += 1
            stale.add(key)
        else:
            state.done.add(key)
    regraded = _regrade([r for r in rows if (r["benchmark"], r["run"], r["chunk"]) in state.done], records)
    for name, pids in sorted(changed_problems.items()):
        state.notes.append(
            f"{name}: the text of problem {', '.join(sorted(pids))} changed since its responses were sampled; "
            f"{changed_chunks[name]} chunk(s) are sampled again"
        )
    for (name, pid), (old, new, count) in sorted(regraded.items()):
        state.notes.append(
            f"{name}: the gold answer of problem {pid} changed ({old!r} -> {new!r}); "
            f"its {count} stored responses were regraded"
        )
    if dropped or stale or regraded:
        state.rows = [r for r in rows if (r["benchmark"], r["run"], r["chunk"]) not in stale]
    return state


def _answering_other_text(group: Sequence[dict], records: dict, recorded: dict) -> set[str]:
    """Problem ids of rows whose response answers a problem text other than the benchmark's now.

    A row's text is its `problem_sha`, else (rows of earlier versions) the hash of the text in
    problems.jsonl (`recorded`); a row with neither is taken as current.
    """
    moved = set()
    for row in group:
        key = (row["benchmark"], row["problem_id"])
        answered = row.get("problem_sha", recorded.get(key))
        if answered is not None and answered != problem_sha(records[key].problem):
            moved.add(row["problem_id"])
    return moved


def _regrade(rows: Sequence[dict], records: dict) -> dict[tuple[str, str], tuple[str, str, int]]:
    """Score again, in place, the rows whose gold differs from the benchmark's answer now.

    Returns {(benchmark, problem id): (old gold, new gold, rows regraded)}.
    """
    from tapo.rewards import math_reward

    changed = [r for r in rows if r["gold"] != records[(r["benchmark"], r["problem_id"])].answer]
    if not changed:
        return {}
    golds = [records[(r["benchmark"], r["problem_id"])].answer for r in changed]
    scores = math_reward([r["response"] for r in changed], golds)
    out: dict[tuple[str, str], tuple[str, str, int]] = {}
    for row, gold, score in zip(changed, golds, scores, strict=True):
        key = (row["benchmark"], row["problem_id"])
        out[key] = (row["gold"], gold, out[key][2] + 1 if key in out else 1)
        row["gold"], row["correct"] = gold, score == 1.0
    return out


def apply_resume_state(path: Path, state: ResumeState) -> None:
    """Write back the kept rows (without partial, stale chunks; regraded) and tell the user what changed."""
    if state.rows is not None:
        rewrite_rows(path, state.rows)
    for note in state.notes:
        print(f"eval: {note}", file=sys.stderr)


__all__ = [
    "Chunk", "EvalProtocol", "evaluate", "load_result", "plan_chunks", "prompt_config", "sample_chunk", "summarize",
    "training_prompt",
]
