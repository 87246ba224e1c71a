"""`tapo demo` (what `make demo` runs): the whole TAPO pipeline on one machine, stage by stage, resumable.

Stages, in order, each announced with one line, skipped when its output exists, and continued when
an earlier run was interrupted in it (DIR is the demo's `output_dir`, `runs/demo` by default):

  cold start data   build the SFT data (trajectory, synthesis, plain, locate)   DIR/coldstart/data.jsonl
  cold start SFT    fine-tune the base model on it (checkpoints)        DIR/coldstart/model/
  eval cold start   held-out Pass@k of the cold-started model (chunks)  DIR/eval-coldstart/result.json
  TAPO              TAPO from the cold-started model (checkpoints)      DIR/tapo/model/
  eval TAPO         held-out Pass@k of the trained model (chunks)       DIR/eval-tapo/result.json
  report            the report page with both evaluations               DIR/report.html

Every output is written whole and then renamed (or appended in complete chunks), so an output that
exists is complete. Once a stage has run, the later stages are made afresh (their old files came
from the earlier output). The report (a view of the files, seconds to make) is rewritten on every run;
then the summary is printed and saved as DIR/summary.txt. DIR/stages.json keeps the seconds each
stage has spent, summed over the runs that worked on it.

The demo config (`recipes/demo-pipeline.yaml`) names the cold-start config and the TAPO run config
(each usable on its own with `tapo coldstart run` / `tapo train`) and the held-out evaluation:

    output_dir: runs/demo
    coldstart: recipes/coldstart-demo.yaml
    train: recipes/demo.yaml
    eval: {problems: 32, samples: 4, runs: 1, temperature: 0.6, top_p: 0.9, max_tokens: 96}

`--set coldstart.KEY=V` and `--set train.KEY=V` reach the named configs; the demo itself sets their
output folders and the TAPO run's model (the cold-started one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tapo.config import ConfigError, RunConfig, load_section, load_top_level, read_config_file

COLDSTART_DIR = "coldstart"
TAPO_DIR = "tapo"
EVAL_BEFORE_DIR = "eval-coldstart"
EVAL_AFTER_DIR = "eval-tapo"
HELDOUT_FILE = "arithmetic-heldout.jsonl"  # the evaluations' benchmark is named by the file's stem
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.txt"
STAGES_FILE = "stages.json"
MODEL_DIR = "model"
# Keys of the named configs that the demo sets itself.
OWNED_KEYS = {"coldstart": ("output_dir",), "train": ("output_dir", "model.name")}


@dataclass
class EvalSection:
    """The held-out evaluation of both models: the test split of the TAPO run's arithmetic task."""

    problems: int = 32  # held-out problems (never trained on: the task's test split)
    samples: int = 4  # samples per problem (n of Pass@k)
    runs: int = 1  # evaluation runs averaged over
    temperature: float = 0.6
    top_p: float = 0.9
    max_tokens: int = 96
    batch_size: int = 8  # problems per generation call
    seed: int = 0
    backend: str = "auto"  # auto (vLLM on a CUDA GPU when installed, else hf) | hf | vllm


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    coldstart: str = "recipes/coldstart-demo.yaml"  # a `tapo coldstart` config
    train: str = "recipes/demo.yaml"  # a `tapo train` config (algorithm: tapo)
    # CPU threads for torch (None: torch's default, one per core). On a machine shared with other work,
    # one thread avoids OpenMP's oversubscription, which made 2-thread generation ~15x slower here.
    threads: int | None = None
    eval: EvalSection = field(default_factory=EvalSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DemoPlan:
    """The demo config and the two configs it names, resolved into their folders under the demo's."""

    demo: DemoConfig
    coldstart: object  # tapo.coldstart.config.ColdStartConfig
    train: RunConfig
    where: str  # the demo config file, for messages

    @property
    def root(self) -> Path:
        return Path(self.demo.output_dir)


def split_overrides(overrides: Sequence[str]) -> dict[str, list[str]]:
    """`--set` values by the config they reach: the demo's own, `coldstart.*` and `train.*` (prefix removed).

    >>> split_overrides(["eval.samples=2", "coldstart.sft.max_steps=1", "train.trainer.max_steps=2", "train=x.yaml"])
    {'demo': ['eval.samples=2', 'train=x.yaml'], 'coldstart': ['sft.max_steps=1'], 'train': ['trainer.max_steps=2']}
    """
    out: dict[str, list[str]] = {"demo": [], "coldstart": [], "train": []}
    for text in overrides:
        head, dot, rest = text.partition(".")
        if dot and head in ("coldstart", "train") and "=" in rest and rest.index("=") > 0 and "=" not in head:
            out[head].append(rest)
        else:
            out["demo"].append(text)
    return out


def _check_eval(section: EvalSection, *, where: str) -> None:
    from tapo.sampling.backends import BACKENDS

    for key in ("problems", "samples", "runs", "max_tokens", "batch_size"):
        if getattr(section, key) < 1:
            raise ConfigError(f"{where}: eval.{key} must be at least 1, got {getattr(section, key)}")
    if section.temperature < 0:
        raise ConfigError(f"{where}: eval.temperature must be >= 0, got {section.temperature}")
    if not 0 < section.top_p <= 1:
        raise ConfigError(f"{where}: eval.top_p must be in (0, 1], got {section.top_p}")
    if section.backend not in BACKENDS:
        raise ConfigError(f"{where}: eval.backend must be one of {', '.join(BACKENDS)}, got {section.backend!r}")


def _owned(name: str, overrides: Sequence[str], *, where: str) -> None:
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in OWNED_KEYS[name]:
            raise ConfigError(
                f"{where}: --set {name}.{text}: the demo sets {name}.{key} itself "
                f"(its folders live under the demo's output_dir); set output_dir of the demo instead"
            )


def load_demo(path: str | Path, overrides: Sequence[str] = ()) -> DemoPlan:
    """Read the demo config and the configs it names, with `--set` applied; errors name the file and key."""
    from tapo.coldstart.config import load_coldstart_config
    from tapo.config import load_config

    parts = split_overrides(overrides)
    raw, where, set_by = read_config_file(path, parts["demo"])
    demo = DemoConfig(**load_top_level(raw, DemoConfig, where=where, set_by=set_by),
                      eval=load_section(raw, "eval", EvalSection, where=where, set_by=set_by))
    _check_eval(demo.eval, where=where)
    if demo.threads is not None and demo.threads < 1:
        raise ConfigError(f"{where}: threads must be at least 1 (or null for one per core), got {demo.threads}")
    root = Path(demo.output_dir)
    for name in ("coldstart", "train"):
        file = getattr(demo, name)
        if not Path(file).is_file():
            raise ConfigError(f"{where}: {name}: config file not found: {file}")
        _owned(name, parts[name], where=where)
    coldstart = load_coldstart_config(
        demo.coldstart, [*parts["coldstart"], f"output_dir={root / COLDSTART_DIR}"]
    )
    train = load_config(
        demo.train,
        [*parts["train"], f"output_dir={root / TAPO_DIR}", f"model.name={root / COLDSTART_DIR / MODEL_DIR}"],
    )
    if train.algorithm != "tapo":
        raise ConfigError(f"{demo.train}: algorithm must be tapo for the demo, got {train.algorithm!r}")
    if train.data.source != "builtin:arithmetic":
        raise ConfigError(
            f"{demo.train}: data.source must be builtin:arithmetic for the demo (it evaluates on the task's "
            f"held-out split), got {train.data.source!r}"
        )
    from tapo.validate import check_template

    for name in ("synthesis_template", "splice_locate_template"):
        if train.tapo.get(name):
            check_template(train.tapo[name], where=demo.train, key=f"tapo.{name}")
    return DemoPlan(demo=demo, coldstart=coldstart, train=train, where=where)


# ---- stages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: done when `output` exists; `run(resume)` makes it."""

    name: str
    output: Path  # exists only once the stage is complete
    run: Callable[[bool], None]  # run(resume): resume is True when `started` found an earlier run's work
    started: Callable[[], str | None] = lambda: None  # what an interrupted earlier run left, or None
    always: bool = False  # rewritten on every run (a view of the other stages' files)
    reset: Callable[[], None] = lambda: None  # remove this stage's files (they were made from older inputs)


def stage_state(stage: Stage) -> tuple[str, str | None]:
    """("done" | "resume" | "start", what is resumed) of a stage, from the files alone."""
    if stage.output.exists() and not stage.always:
        return "done", None
    left = stage.started()
    return ("resume", left) if left else ("start", None)


def announce(number: int, total: int, stage: Stage, state: str, note: str | None, *, out=sys.stdout) -> None:
    """The stage's one line."""
    what = {"done": f"skipped, {stage.output} exists", "resume": f"continuing ({note})",
            "start": f"-> {stage.output}"}[state]
    print(f"[{number}/{total}] {stage.name}: {what}", file=out, flush=True)


def run_stages(stages: Sequence[Stage], *, times_file: Path | None = None, out=sys.stdout) -> dict[str, str]:
    """Run what is not done yet, in order; returns stage name -> "done" (skipped), "resume" or "start".

    Once a stage has run, the later ones are made afresh: their files (if any) were made from the
    earlier output, so they are reset first. The seconds each stage spends are added to `times_file`
    (JSON, stage name -> seconds) as soon as it ends, so the figures survive an interruption later on.
    """
    states, ran = {}, False
    for number, stage in enumerate(stages, start=1):
        if ran and not stage.always:
            stage.reset()
        state, note = stage_state(stage)
        states[stage.name] = state
        announce(number, len(stages), stage, state, note, out=out)
        if state == "done":
            continue
        ran = True
        started = time.perf_counter()
        try:
            stage.run(state == "resume")
        finally:
            if times_file is not None:
                add_seconds(times_file, stage.name, time.perf_counter() - started)
    return states


def add_seconds(path: Path, name: str, seconds: float) -> None:
    """Add `seconds` to stage `name` in a JSON file of stage -> seconds (written whole, then renamed)."""
    times = read_times(path)
    times[name] = round(times.get(name, 0.0) + seconds, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(times, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_times(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    try:
        times = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(times, dict):
        raise ValueError(f"{path}: expected an object of stage -> seconds")
    return times


def heldout_file(plan: DemoPlan) -> Path:
    """The held-out problems as a benchmark file (JSONL: id, problem, answer), written once."""
    from tapo.data import load_records

    path = plan.root / HELDOUT_FILE
    data = plan.train.data
    steps = tuple(data.n_steps) if isinstance(data.n_steps, list) else data.n_steps
    records = load_records("builtin:arithmetic", split="test", n=plan.demo.eval.problems, seed=data.data_seed,
                           n_steps=steps, max_operand=data.max_operand)
    text = "".join(json.dumps({"id": r.id, "problem": r.problem, "answer": r.answer}) + "\n" for r in records)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def _eval_started(directory: Path) -> Callable[[], str | None]:
    def started() -> str | None:
        responses = directory / "responses.jsonl"
        if responses.is_file() and responses.stat().st_size > 0:
            return f"the chunks in {responses} are kept"
        return None

    return started


def _evaluate(plan: DemoPlan, model: Path, directory: Path) -> None:
    from tapo.evaluation.run import EvalProtocol, evaluate, training_prompt

    section = plan.demo.eval
    protocol = EvalProtocol(samples=section.samples, runs=section.runs, temperature=section.temperature,
                            top_p=section.top_p, max_tokens=section.max_tokens, seed=section.seed)
    # Both models on the TAPO run's prompt (instruction, chat template arguments): the cold-started
    # model is where that run's rollouts start.
    evaluate(str(model), [str(heldout_file(plan))], output_dir=directory, protocol=protocol,
             batch_size=section.batch_size, backend=section.backend, dtype=plan.train.model.dtype,
             **training_prompt(plan.train))


def demo_stages(plan: DemoPlan) -> list[Stage]:
    """The pipeline's stages for this plan (nothing runs until `run_stages`)."""
    from tapo.engine.run import CONFIG_FILE, last_checkpoint

    root = plan.root
    coldstart_dir, tapo_dir = root / COLDSTART_DIR, root / TAPO_DIR
    data = coldstart_dir / "data.jsonl"
    coldstart_model, tapo_model = coldstart_dir / MODEL_DIR, tapo_dir / MODEL_DIR

    def build(resume: bool) -> None:
        from tapo.coldstart.build import build_coldstart, nothing_kept

        stats = build_coldstart(plan.coldstart, output=data, progress=True)
        why = nothing_kept(stats)
        if why:
            data.unlink(missing_ok=True)  # an empty data set is no finished stage
            raise ValueError(f"{plan.demo.coldstart}: the cold-start build kept nothing: {why}")
        examples = stats["examples"]
        print(f"  {examples['trajectory']} trajectory + {examples['synthesis']} synthesis + {examples['plain']} plain "
              f"examples from {stats['kept']} constructions", flush=True)

    def sft(resume: bool) -> None:
        from tapo.engine.sft import run_sft

        run_sft(plan.coldstart, data=data, output_dir=coldstart_dir, resume=resume)

    def sft_started() -> str | None:
        checkpoint = last_checkpoint(coldstart_dir)
        return f"from {checkpoint}" if checkpoint else None

    def train(resume: bool) -> None:
        from tapo.engine.run import run_training
        from tapo.validate import check_run

        check_run(plan.train, where=plan.demo.train)
        run_training(plan.train, resume=resume)

    def train_started() -> str | None:
        checkpoint = last_checkpoint(tapo_dir)
        if checkpoint:
            return f"from {checkpoint}"
        return "no checkpoint yet: starts again from step 0" if (tapo_dir / CONFIG_FILE).is_file() else None

    def report(resume: bool) -> None:
        from tapo.report import write_report

        write_report(tapo_dir, evals=[root / EVAL_BEFORE_DIR, root / EVAL_AFTER_DIR], output=root / REPORT_FILE)

    def reset_sft() -> None:  # everything in the cold-start folder but its data
        for path in coldstart_dir.iterdir() if coldstart_dir.is_dir() else ():
            if not path.name.startswith("data."):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def remove(path: Path) -> Callable[[], None]:
        return lambda: shutil.rmtree(path, ignore_errors=True)

    construction = plan.train.tapo.get("construction", "self")
    return [
        Stage("cold start data", data, build),
        Stage("cold start SFT", coldstart_model, sft, sft_started, reset=reset_sft),
        Stage("eval of the cold-started model", root / EVAL_BEFORE_DIR / "result.json",
              lambda resume: _evaluate(plan, coldstart_model, root / EVAL_BEFORE_DIR),
              _eval_started(root / EVAL_BEFORE_DIR), reset=remove(root / EVAL_BEFORE_DIR)),
        Stage(f"TAPO ({construction})", tapo_model, train, train_started, reset=remove(tapo_dir)),
        Stage("eval of the TAPO model", root / EVAL_AFTER_DIR / "result.json",
              lambda resume: _evaluate(plan, tapo_model, root / EVAL_AFTER_DIR),
              _eval_started(root / EVAL_AFTER_DIR), reset=remove(root / EVAL_AFTER_DIR)),
        Stage("report", root / REPORT_FILE, report, always=True),
    ]


def run_demo(plan: DemoPlan, *, out=sys.stdout) -> str:
    """Run every stage not done yet, then print and save the summary; returns the summary's text."""
    from tapo.config import save_config

    if plan.demo.threads is not None:
        import torch

        torch.set_num_threads(plan.demo.threads)
    plan.root.mkdir(parents=True, exist_ok=True)
    save_config(plan.demo, plan.root / "demo.yaml")
    run_stages(demo_stages(plan), times_file=plan.root / STAGES_FILE, out=out)
    text = summary_text(read_summary(plan.root))
    (plan.root / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
    print(text, file=out, flush=True)
    return text


# ---- the summary ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSummary:
    """What the demo's files say, for the closing summary (every number read from a run file)."""

    root: Path
    pass_before: float | None  # held-out Pass@1 (mean over eval runs) of the cold-started model
    pass_after: float | None  # ... of the TAPO-trained model
    problems: int | None
    samples: int | None
    runs: int | None
    steps: int  # TAPO steps logged
    tried: int  # construction pairs tried (tapo/tried of each generation)
    built: int  # constructions built (records of constructions.jsonl)
    steps_built: int  # steps that built at least one
    right: int  # built constructions whose final answer is right
    example: dict | None  # one construction record to show
    seconds: dict  # stage -> seconds (stages.json)
    report: Path


def _pass_at_1(result_dir: Path) -> tuple[float | None, dict | None]:
    from tapo.report.evals import load_eval_result

    if not (result_dir / "result.json").is_file():
        return None, None
    result = load_eval_result(result_dir)
    bench = next(iter(result["benchmarks"].values()))
    return bench["pass_at_k"]["1"]["mean"], {**result["protocol"], "n_problems": bench.get("n_problems")}


def pick_example(records: Sequence[dict]) -> dict | None:
    """The construction to show: the last one that ends right with all three parts, else the last with all three,
    else the last one.

    >>> r = lambda **kw: {"text": "a\\nWait, b.\\nc", "reflection_start_char": 1, "correction_start_char": 10, **kw}
    >>> pick_example([r(reward=1.0, step=1), r(reward=0.0, step=2)])["step"], pick_example([]) is None
    (1, True)
    """
    from tapo.report.spans import split_trajectory

    def whole(record: dict) -> bool:
        parts = split_trajectory(record["text"], reflection_start_char=record.get("reflection_start_char"),
                                 correction_start_char=record.get("correction_start_char"))
        return bool(parts.prefix.strip() and parts.reflection.strip() and parts.correction.strip())

    for wanted in (lambda r: whole(r) and (r.get("reward") or 0) > 0, whole, lambda r: True):
        chosen = [r for r in records if wanted(r)]
        if chosen:
            return chosen[-1]
    return None


def read_summary(root: str | Path) -> DemoSummary:
    """The summary's numbers from a demo folder's files (missing stages give None / 0)."""
    from tapo.report.data import CONSTRUCTIONS_FILE, METRICS_FILE, construction_counts, read_jsonl

    root = Path(root)
    before, protocol = _pass_at_1(root / EVAL_BEFORE_DIR)
    after, protocol_after = _pass_at_1(root / EVAL_AFTER_DIR)
    protocol = protocol or protocol_after or {}
    metrics, _ = read_jsonl(root / TAPO_DIR / METRICS_FILE)
    records, _ = read_jsonl(root / TAPO_DIR / CONSTRUCTIONS_FILE)
    return DemoSummary(
        root=root, pass_before=before, pass_after=after, problems=protocol.get("n_problems"),
        samples=protocol.get("samples"), runs=protocol.get("runs"),
        steps=len(metrics), tried=construction_counts(metrics)[1], built=len(records),
        steps_built=len({r.get("step") for r in records}), right=sum((r.get("reward") or 0) > 0 for r in records),
        example=pick_example(records), seconds=read_times(root / STAGES_FILE), report=root / REPORT_FILE,
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def trajectory_lines(record: dict, *, width: int = 12) -> list[str]:
    """A construction's text, each line labelled with its part: kept prefix, reflection, correction.

    >>> print("\\n".join(trajectory_lines({"text": "x = 6\\nWait, x is 5.\\nSo 5.", "reflection_start_char": 5,
    ...                                    "correction_start_char": 20})))
    kept prefix  | x = 6
    reflection   | Wait, x is 5.
    correction   | So 5.
    """
    from tapo.report.spans import split_trajectory

    parts = split_trajectory(record["text"], reflection_start_char=record.get("reflection_start_char"),
                             correction_start_char=record.get("correction_start_char"))
    lines = []
    for label, text in (("kept prefix", parts.prefix), ("reflection", parts.reflection),
                        ("correction", parts.correction)):
        for k, line in enumerate(text.strip("\n").split("\n") if text.strip() else []):
            lines.append(f"{label if k == 0 else '':<{width}} | {line}")
    return lines


def summary_text(summary: DemoSummary) -> str:
    """The closing summary: Pass@1 before and after, the constructions, one of them, the report's path."""
    s = summary
    held = (f"{s.problems} held-out problems x {s.samples} samples" + (f" x {s.runs} runs" if (s.runs or 1) > 1 else "")
            if s.problems else "held-out problems")
    lines = [f"TAPO demo summary ({s.root})",
             f"  held-out Pass@1 ({held}): cold start {_percent(s.pass_before)} -> after TAPO {_percent(s.pass_after)}"]
    share = f"{s.built / s.tried:.0%}" if s.tried else "n/a"
    lines.append(f"  TAPO: {s.steps} steps; constructions built {s.built} / attempted {s.tried} ({share}), "
                 f"on {s.steps_built} of {s.steps} steps")
    if s.built:
        lines.append(f"  constructions that ended right: {s.right} of {s.built} ({s.right / s.built:.0%})")
    if s.example is not None:
        e = s.example
        reward = e.get("reward")
        outcome = "right" if (reward or 0) > 0 else "wrong"
        lines.append(f"  one constructed trajectory (step {e.get('step')}, ended {outcome}):")
        lines.append(f"    question     | {e.get('question', '')}")
        lines += [f"    {line}" for line in trajectory_lines(e)]
    if s.seconds:
        total = sum(s.seconds.values())
        stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in s.seconds.items())
        lines.append(f"  time: {total:.0f} s ({stages})")
    lines.append(f"  report: {s.report}")
    return "\n".join(lines)
