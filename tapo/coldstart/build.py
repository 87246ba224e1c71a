r"""`tapo coldstart build`: a supervised cold-start data set of micro-reflective trajectories (DESIGN 1.7).

For each query: sample K responses from the base model, score them with the rollout reward, pick
one (y-, y+) pair, construct one micro-reflective trajectory with the configured strategy
(`aligned`, `self`, `splice` or `teacher`), keep it only when its final answer is right, and
write two kinds of SFT examples in TRL's conversational prompt-completion form:

- *trajectory* ("SFT-format"): the ordinary training prompt -> the constructed trajectory;
- *synthesis* ("IFT-format"): the `self` synthesis prompt (exactly what the trainer sends) ->
  `<analysis>...</analysis>\n<reconstruction>...</reconstruction>`, which `parse_synthesis` reads
  back to the same (analysis, reconstruction) (checked for every example);
- *locate* (beyond the paper, `mix: {locate: w}`, aligned constructions): splice's `ask` locate
  prompt -> `<quote>y-'s first wrong step</quote>\n<analysis>...</analysis>`, which `parse_locate`
  reads back and whose quote `find_quote_end` finds in y- (checked for every example);
- *plain*: the ordinary prompt -> y+ with no reflection.

Pairing (the `build` section): the paper pairs a wrong sample with one of the policy's own right
samples (`positive_source: policy`). A cold start is supervised data, so for the built-in
arithmetic task y+ may be the gold reference solution (`reference`, or `either` = the policy's
when it has n_pos right samples, else the reference), and y- may be a corrupted reference
(`synthetic_negative: unparsable` when the model's wrong sample has no checkable step, `always`
to skip sampling). Every choice is recorded on the example (`negative_source`, `positive_source`).

Output: DATA.jsonl, DATA.stats.json (queries, eligible, constructed, kept, per kind, failures by
reason, timings) and DATA.config.yaml (the resolved config) beside it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tapo.coldstart.config import MIX_KINDS, BuildSection, ColdStartConfig
from tapo.config import save_config
from tapo.core.selection import select_pairs, split_group
from tapo.core.synthesis import (
    LOCATE_TEMPLATE,
    SELF_TEMPLATE,
    build_locate_prompt,
    build_self_prompt,
    find_quote_end,
    parse_locate,
    parse_synthesis,
)
from tapo.core.types import ConstructedTrajectory, ConstructionPair, ConstructionRequest
from tapo.data.datasets import read_text

KINDS = MIX_KINDS
SYNTHETIC = -1  # negative_index of a corrupted reference (not one of the K samples)
REFERENCE = -1  # positive_index of the gold reference solution


@dataclass(frozen=True)
class Query:
    """One cold-start query: the training prompt and, for the arithmetic task, its problem."""

    id: str
    problem: str  # the bare problem text
    answer: str
    prompt: list  # the ordinary training prompt (chat messages), as `tapo train` builds it
    task: object | None = None  # tapo.data.arithmetic.ArithmeticProblem for builtin:arithmetic


@dataclass(frozen=True)
class Choice:
    """Which y- and y+ one query pairs: an index into its samples, or SYNTHETIC / REFERENCE."""

    negative: int
    positive: int


def format_synthesis(analysis: str, reconstruction: str) -> str:
    """The synthesis target in the format `parse_synthesis` reads.

    >>> text = format_synthesis("Step 1 adds wrong.", "Step 1: 2 + 2 = 5\\nWait, 2 + 2 is 4.")
    >>> parse_synthesis(text) == ("Step 1 adds wrong.", "Step 1: 2 + 2 = 5\\nWait, 2 + 2 is 4.")
    True
    """
    return f"<analysis>{analysis}</analysis>\n<reconstruction>{reconstruction}</reconstruction>"


def choose_pair(
    rewards: Sequence[float],
    *,
    n_pos: int,
    n_neg: int,
    positive_source: str,
    synthetic_always: bool,
    rng: random.Random,
) -> Choice | None:
    """The (y-, y+) of one query, or None when it is not eligible.

    With the policy's own y+ (`positive_source: policy`, or `either` with >= n_pos right samples)
    the pair comes from `select_pairs(m_max=1)`, as in training. With the reference, the query
    needs only >= n_neg wrong samples and y- is drawn uniformly from them. `synthetic_always`
    drops the y- requirement (y- will be a corrupted reference).

    >>> choose_pair([0, 0, 1, 0], n_pos=1, n_neg=1, positive_source="policy", synthetic_always=False,
    ...             rng=random.Random(0))
    Choice(negative=1, positive=2)
    >>> choose_pair([0, 0], n_pos=1, n_neg=1, positive_source="reference", synthetic_always=False,
    ...             rng=random.Random(0)).positive == REFERENCE
    True
    >>> choose_pair([0, 0], n_pos=1, n_neg=1, positive_source="policy", synthetic_always=False,
    ...             rng=random.Random(0)) is None
    True
    """
    positives, negatives = split_group(rewards)
    own_positive = positive_source == "policy" or (positive_source == "either" and len(positives) >= n_pos)
    if synthetic_always:
        if not own_positive:
            return Choice(SYNTHETIC, REFERENCE)
        return Choice(SYNTHETIC, rng.choice(positives)) if len(positives) >= n_pos else None
    if own_positive:
        pairs = select_pairs(rewards, n_pos, n_neg, 1, rng)
        return Choice(*pairs[0]) if pairs else None
    if len(negatives) < max(n_neg, 1):
        return None
    return Choice(rng.choice(negatives), REFERENCE)


def mix_counts(kept: int, mix: dict) -> dict[str, int]:
    """Examples per kind (trajectory, synthesis, plain, locate) from `kept` constructions in the ratio `mix`.

    The largest weight uses every construction; the others are scaled down (rounded).

    >>> mix_counts(10, {"trajectory": 2, "synthesis": 1})
    {'trajectory': 10, 'synthesis': 5, 'plain': 0, 'locate': 0}
    >>> mix_counts(10, {"trajectory": 2, "synthesis": 1, "plain": 2, "locate": 1})
    {'trajectory': 10, 'synthesis': 5, 'plain': 10, 'locate': 5}
    """
    weights = {kind: float(mix.get(kind, 0)) for kind in KINDS}
    scale = kept / max(weights.values())
    return {kind: round(scale * w) for kind, w in weights.items()}


def load_queries(config) -> list[Query]:
    """The queries of `config.data` with their training prompts, exactly as `tapo train` builds them."""
    from tapo.data import build_dataset
    from tapo.data.arithmetic import parse_question

    dataset = build_dataset(config.data)
    if len(dataset) == 0:
        raise ValueError(f"no queries: {_why_no_queries(config.data)}")
    arithmetic = config.data.source == "builtin:arithmetic"
    return [
        Query(
            id=row["query_id"], problem=row["problem"], answer=row["answer"], prompt=row["prompt"],
            task=parse_question(row["problem"]) if arithmetic else None,
        )
        for row in dataset
    ]


def _why_no_queries(data) -> str:
    """Which data setting gave an empty query set (the sampling would run on nothing and write nothing)."""
    if data.limit == 0:
        return "data.limit is 0"
    if data.source == "builtin:arithmetic":
        return f"data.n is {data.n} for builtin:arithmetic"
    return f"data.source {data.source!r} has no rows"


def nothing_kept(stats: dict) -> str | None:
    """Why a build wrote no example (then `tapo coldstart build` exits 1), or None when it wrote some.

    >>> nothing_kept({"examples": {"trajectory": 0}, "queries": 4, "eligible": 0, "sample_pass_rate": 0.0,
    ...               "samples_per_query": 2, "constructed": 0, "failed": {}, "kept": 0})  # doctest: +ELLIPSIS
    'none of the 4 queries could be paired: no sample was right (sample pass rate 0), ...'
    """
    if any(stats["examples"].values()):
        return None
    queries, rate = stats["queries"], stats["sample_pass_rate"]
    if stats["eligible"] == 0:
        if rate == 0:
            why = (
                "no sample was right (sample pass rate 0), so there is no y+; use a stronger model, easier data, "
                "or (builtin:arithmetic) build.positive_source: either / reference"
            )
        elif rate == 1:
            why = "every sample was right (sample pass rate 1), so there is no y-; use harder data, more build.samples"
        else:
            why = (
                f"too few right and wrong samples per query (sample pass rate {rate:.3g} over "
                f"{stats['samples_per_query']} samples each); raise build.samples or lower build.n_pos / build.n_neg"
            )
        return f"none of the {queries} queries could be paired: {why}"
    if stats["constructed"] == 0:
        return f"all {stats['eligible']} constructions failed ({json.dumps(stats['failed'])})"
    if stats["kept"] == 0:
        return f"none of the {stats['constructed']} constructed trajectories ends with the right answer"
    return "the mix left no example (build.mix)"


def make_request(
    query: Query,
    choice: Choice,
    samples: Sequence[str],
    *,
    tokenizer,
    synthetic_negative: str,
    rng: random.Random,
) -> tuple[ConstructionRequest, str, str]:
    """(request, negative source, positive source) for one chosen pair; y- text becomes the student's ids."""
    from tapo.data.arithmetic import corrupt_solution, parse_steps

    negative_source = "policy"
    if choice.negative == SYNTHETIC:
        negative_text, negative_source = corrupt_solution(query.task, rng=rng)[0], "synthetic"
    else:
        negative_text = samples[choice.negative]
        if synthetic_negative == "unparsable" and query.task is not None and not parse_steps(negative_text):
            negative_text, negative_source = corrupt_solution(query.task, rng=rng)[0], "synthetic"
    if choice.positive == REFERENCE:
        positive_text, positive_source = query.task.solution, "reference"
    else:
        positive_text, positive_source = samples[choice.positive], "policy"
    ids = tuple(tokenizer.encode(negative_text, add_special_tokens=False)) + (tokenizer.eos_token_id,)
    pair = ConstructionPair(query_id=query.id, negative_index=choice.negative, positive_index=choice.positive)
    request = ConstructionRequest(
        pair=pair, question=query.problem, negative_text=negative_text, negative_ids=ids,
        positive_text=positive_text, answer=query.answer,
    )
    return request, negative_source, positive_source


KIND_PHRASES = {
    "arithmetic": "an arithmetic slip",
    "carry": "a miscopied running value",
    "operand": "a wrong operand",
    "operation": "a wrong operation",
    "skip": "a skipped operation",
    "extra": "an extra step",
    "missing": "an unfinished solution",
}


def synthesis_analysis(trajectory: ConstructedTrajectory) -> str:
    """The analysis written into a synthesis example; `aligned` gets a reviewer's phrasing of its diagnosis.

    >>> from tapo.core.types import ConstructionPair
    >>> t = ConstructedTrajectory(ConstructionPair("q", 0, -1), "aligned", "", (),
    ...     "Wait, let me double-check step 1: 2 + 2 is 4, not 5. That was an arithmetic slip.",
    ...     0, 0, 0, extra={"kind": "arithmetic", "wrong_step": 0})
    >>> synthesis_analysis(t)
    'The first critical mistake is in step 1, an arithmetic slip: 2 + 2 is 4, not 5.'
    """
    if trajectory.strategy != "aligned":
        return trajectory.analysis
    kind = trajectory.extra.get("kind", "")
    step = trajectory.extra.get("wrong_step", 0) + 1
    detail = trajectory.analysis.split(":", 1)[1].strip() if ":" in trajectory.analysis else trajectory.analysis
    detail = detail.split(" That was ")[0].split(" I used ")[0]
    return f"The first critical mistake is in step {step}, {KIND_PHRASES.get(kind, 'a mistake')}: {detail}"


def trajectory_example(query: Query, trajectory: ConstructedTrajectory, provenance: dict) -> dict:
    """Ordinary training prompt -> the constructed trajectory (TRL conversational prompt-completion)."""
    return {
        "kind": "trajectory",
        "prompt": query.prompt,
        "completion": [{"role": "assistant", "content": trajectory.text}],
        **provenance,
    }


def plain_example(query: Query, positive_text: str, provenance: dict) -> dict:
    """Ordinary training prompt -> the pair's right answer y+ itself, without reflection.

    Mixed in (`mix: {plain: w}`) so the model does not learn to reflect on every answer; the paper's
    cold start has only trajectory and synthesis examples, so the default weight is 0.
    """
    return {
        "kind": "plain",
        "prompt": query.prompt,
        "completion": [{"role": "assistant", "content": positive_text}],
        **provenance,
    }


def synthesis_example(
    request: ConstructionRequest, trajectory: ConstructedTrajectory, provenance: dict, *, template: str
) -> dict | None:
    """Synthesis prompt -> analysis + reconstruction; None when the target would not parse back to itself."""
    analysis = synthesis_analysis(trajectory)
    target = format_synthesis(analysis, trajectory.text)
    if parse_synthesis(target) != (analysis.strip(), trajectory.text.strip()):
        return None
    prompt = build_self_prompt(
        question=request.question, negative=request.negative_text, positive=request.positive_text, template=template
    )
    return {
        "kind": "synthesis",
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": target}],
        **provenance,
    }


def locate_target(request: ConstructionRequest, trajectory: ConstructedTrajectory) -> tuple[str, str] | None:
    """(quote, analysis) a locate example teaches: y-'s first wrong step line and the reviewer's diagnosis.

    Only an `aligned` construction knows its wrong step (`extra["wrong_step"]`, a position in
    `parse_steps(y-)`); None for other strategies and for a mistake that is no written step
    (an unfinished solution).

    >>> from tapo.core.types import ConstructionPair
    >>> negative = "Step 1: 8 - 4 = 4\\nThe answer is \\\\boxed{4}."
    >>> r = ConstructionRequest(pair=ConstructionPair("q", -1, -1), question="Start with 6. Subtract 4.",
    ...     negative_text=negative, negative_ids=(), positive_text="", answer="2")
    >>> t = ConstructedTrajectory(ConstructionPair("q", -1, -1), "aligned", "", (),
    ...     "Wait, let me double-check step 1: it should start from 6, not 8.", 0, 0, 0,
    ...     extra={"kind": "carry", "wrong_step": 0})
    >>> locate_target(r, t)
    ('Step 1: 8 - 4 = 4', 'The first critical mistake is in step 1, a miscopied running value: it should start from 6, not 8.')
    """
    from tapo.data.arithmetic import parse_steps

    if trajectory.strategy != "aligned" or trajectory.extra.get("kind") == "missing":
        return None
    steps = parse_steps(request.negative_text)
    index = trajectory.extra.get("wrong_step")
    if not isinstance(index, int) or not 0 <= index < len(steps):
        return None
    start, end = steps[index].span
    return request.negative_text[start:end].strip(), synthesis_analysis(trajectory)


def locate_example(
    request: ConstructionRequest, trajectory: ConstructedTrajectory, provenance: dict, *, template: str
) -> dict | None:
    """Locate prompt -> <quote>...</quote> + <analysis>...</analysis>; None when there is no quote to teach,
    or the target would not parse back to it, or the quote would not be found in y- (`find_quote_end`)."""
    target = locate_target(request, trajectory)
    if target is None:
        return None
    quote, analysis = target
    text = f"<quote>{quote}</quote>\n<analysis>{analysis}</analysis>"
    if parse_locate(text) != (quote, analysis.strip()) or find_quote_end(quote, request.negative_text) is None:
        return None
    prompt = build_locate_prompt(
        question=request.question, negative=request.negative_text, positive=request.positive_text, template=template
    )
    return {
        "kind": "locate",
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": text}],
        "quote": quote,
        **provenance,
    }


def make_constructor_for(config: ColdStartConfig, *, sampler, tokenizer, output: Path, template: str):
    """The configured constructor; `self` / `splice` generate with the base model through `sampler`."""
    from tapo.core.constructors import make_constructor
    from tapo.sampling import SamplingSettings

    build = config.build
    if build.construction == "teacher":
        from tapo.coldstart.teacher import make_teacher

        return make_teacher(
            config.teacher, tokenizer=tokenizer, cache_dir=str(output.parent / f"{output.stem}.teacher-cache"),
            template=template, max_reflection_chars=build.max_reflection_chars,
        )
    generate = None
    if build.construction in ("self", "splice"):
        from tapo.sampling import generate_fn

        settings = SamplingSettings(
            temperature=build.synthesis_temperature, top_p=build.synthesis_top_p,
            max_tokens=build.synthesis_max_new_tokens,
        )
        generate = generate_fn(sampler, settings=settings, seed=config.seed, batch_size=build.batch_size)
    return make_constructor(
        build.construction, tokenizer=tokenizer, generate=generate, self_template=template,
        locate_template=read_text(build.locate_template) if build.locate_template else None,
        max_reflection_chars=build.max_reflection_chars,
    )


def sample_and_score(config: ColdStartConfig, queries: Sequence[Query], *, sampler, progress: bool):
    """(sample texts per query, rewards per query): K samples of the ordinary training prompt."""
    from tapo.sampling import sample_query_groups
    from tapo.rewards import math_reward

    groups = sample_query_groups(sampler, queries, config.build, seed=config.seed, tag="coldstart samples",
                                 progress=progress)
    texts = [[c.text for c in group] for group in groups]
    flat = [t for group in texts for t in group]
    answers = [q.answer for q, group in zip(queries, texts) for _ in group]
    scores = math_reward(flat, answers) if flat else []
    rewards, at = [], 0
    for group in texts:
        rewards.append(scores[at : at + len(group)])
        at += len(group)
    return texts, rewards


def build_coldstart(config: ColdStartConfig, *, output: str | Path, progress: bool = False) -> dict:
    """Build the cold-start data set into `output` (JSONL) and return its stats (also written beside it)."""
    from tapo.sampling import make_sampler
    from tapo.models import load_tokenizer
    from tapo.rewards import math_reward

    output = Path(output)
    build: BuildSection = config.build
    started = time.perf_counter()
    queries = load_queries(config)  # empty data is an error before anything is written
    output.parent.mkdir(parents=True, exist_ok=True)
    template = read_text(build.self_template) if build.self_template else SELF_TEMPLATE  # UTF-8, BOM or not
    locate_template = read_text(build.locate_template) if build.locate_template else LOCATE_TEMPLATE
    needs_model = build.samples > 0 or build.construction in ("self", "splice")
    sampler = make_sampler(config.model.name, backend=build.backend, dtype=config.model.dtype, seed=config.seed) \
        if needs_model else None
    tokenizer = sampler.tokenizer if sampler is not None else load_tokenizer(config.model.name)

    texts, rewards = sample_and_score(config, queries, sampler=sampler, progress=progress) if build.samples > 0 \
        else ([[] for _ in queries], [[] for _ in queries])
    sampled_at = time.perf_counter()

    requests, sources = [], []
    for query, group, group_rewards in zip(queries, texts, rewards, strict=True):
        rng = random.Random(f"tapo/coldstart/seed={config.seed}/{query.id}")
        choice = choose_pair(
            group_rewards, n_pos=build.n_pos, n_neg=build.n_neg, positive_source=build.positive_source,
            synthetic_always=build.synthetic_negative == "always", rng=rng,
        )
        if choice is None:
            continue
        request, negative_source, positive_source = make_request(
            query, choice, group, tokenizer=tokenizer, synthetic_negative=build.synthetic_negative, rng=rng
        )
        requests.append(request)
        sources.append({"negative_source": negative_source, "positive_source": positive_source})

    constructor = make_constructor_for(config, sampler=sampler, tokenizer=tokenizer, output=output, template=template)
    results = constructor.construct(requests)
    built = [(i, r) for i, r in enumerate(results) if isinstance(r, ConstructedTrajectory)]
    scores = math_reward([r.text for _, r in built], [requests[i].answer for i, _ in built]) if built else []
    kept = [(i, replace(r, reward=s)) for (i, r), s in zip(built, scores) if s > 0]
    constructed_at = time.perf_counter()

    by_id = {q.id: q for q in queries}
    counts = mix_counts(len(kept), build.mix)
    mix_rng = random.Random(f"tapo/coldstart/mix/seed={config.seed}")
    chosen_by_kind = {kind: sorted(mix_rng.sample(range(len(kept)), counts[kind])) for kind in KINDS}
    rows, not_roundtrip, no_quote = [], 0, 0
    for kind, chosen in chosen_by_kind.items():
        for j in chosen:
            i, trajectory = kept[j]
            request = requests[i]
            provenance = {
                "query_id": request.pair.query_id, "answer": request.answer, "strategy": trajectory.strategy,
                **sources[i], "negative": request.negative_text, "positive": request.positive_text,
                "analysis": trajectory.analysis, "prefix_tokens": trajectory.prefix_tokens,
            }
            if kind == "trajectory":
                rows.append(trajectory_example(by_id[request.pair.query_id], trajectory, provenance))
            elif kind == "plain":
                rows.append(plain_example(by_id[request.pair.query_id], request.positive_text, provenance))
            elif kind == "locate":
                example = locate_example(request, trajectory, provenance, template=locate_template)
                if example is None:
                    no_quote += 1
                else:
                    rows.append(example)
            else:
                example = synthesis_example(request, trajectory, provenance, template=template)
                if example is None:
                    not_roundtrip += 1
                else:
                    rows.append(example)
    write_jsonl(output, rows)
    # the settings that built these rows, written after them: an interrupted rebuild leaves the data and its
    # settings as they were (never new settings beside old rows, which a resume would take for a match)
    save_config(config, output.with_suffix(".config.yaml"))

    failures = Counter(r.reason for r in results if not isinstance(r, ConstructedTrajectory))
    all_rewards = [x for group in rewards for x in group]
    stats = {
        "output": str(output),
        "model": config.model.name,
        "construction": build.construction,
        "queries": len(queries),
        "samples_per_query": build.samples,
        "sample_pass_rate": sum(all_rewards) / len(all_rewards) if all_rewards else None,
        "queries_with_a_right_sample": sum(1 for g in rewards if any(x > 0 for x in g)),
        "eligible": len(requests),
        "negative_source": dict(Counter(s["negative_source"] for s in sources)),
        "positive_source": dict(Counter(s["positive_source"] for s in sources)),
        "constructed": len(built),
        "failed": dict(failures),
        "constructed_right": len(kept),
        "kept": len(kept),
        "examples": {kind: sum(r["kind"] == kind for r in rows) for kind in KINDS},
        "synthesis_not_roundtrip": not_roundtrip,
        "locate_without_quote": no_quote,
        "seconds": {"sampling": round(sampled_at - started, 2), "construction": round(constructed_at - sampled_at, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }
    client = getattr(constructor, "client", None)
    if client is not None:
        stats["teacher"] = dict(client.stats)
    output.with_suffix(".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


NOT_DATA_SETTINGS = ("output_dir", "sft")  # what `coldstart run --resume` may change without rebuilding the data


def data_settings_changes(data: str | Path, config: ColdStartConfig) -> list[str] | None:
    """`dotted.key: built -> now` for each setting that built `data` (its DATA.config.yaml) and differs in `config`;
    None when no settings file is beside it (built by an older version, or copied without it). The fine-tuning
    (`sft`) and the run directory are not data settings."""
    return settings_changes(Path(data).with_suffix(".config.yaml"), config, ignore=NOT_DATA_SETTINGS)


def settings_changes(saved: str | Path, config: ColdStartConfig, *, ignore: Sequence[str] = ("output_dir",)
                     ) -> list[str] | None:
    """`dotted.key: saved -> now` for each setting of the cold-start config saved at `saved` that differs in
    `config` (top-level keys in `ignore` left out); None when nothing is saved there."""
    from tapo.coldstart.config import load_coldstart_config

    if not Path(saved).is_file():
        return None

    def settings(cfg: ColdStartConfig) -> dict:
        return _flatten({k: v for k, v in cfg.to_dict().items() if k not in ignore})

    before, after = settings(load_coldstart_config(saved)), settings(config)
    unset = "(unset)"
    return [f"{key}: {before.get(key, unset)} -> {after.get(key, unset)}"
            for key in sorted(before.keys() | after.keys()) if before.get(key, unset) != after.get(key, unset)]


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested mappings as dotted keys: {"build": {"mix": {"plain": 1}}} -> {"build.mix.plain": 1}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    """Write rows atomically: a half-written data set never replaces a whole one."""
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
