"""TAPO's constructions through TRL's real vLLM generation code, on two CPU processes (gloo).

TRL's `VLLMGeneration` gathers every process's prompts, generates once and hands process p the slice
[p * len(local prompts), (p + 1) * len(local prompts)) of the results (server mode; colocate with tensor
parallelism slices the same way inside the TP group). That is only right when every process passes the
same number of prompts. TAPO gives each process its own construction pairs, and their number can differ
(an odd pair count over two processes), so these tests run TAPO with the in-process vLLM stand-in
(tests/standin_vllm.py), whose answers name the prompt they answer, and check that every constructed
trajectory was built from ITS OWN question and y-.

The last test checks the HF generate path: with generation being a step every process takes, a process
without pairs must still make the same generation calls as the others.

Each test launches tests/distributed_tapo.py under `accelerate launch` (about 15-25 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from standin_vllm import question_mark

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "tests" / "distributed_tapo.py"
PROCESSES = 2
TIMEOUT_S = 300

# vLLM through the stand-in, two steps. The stand-in's `self` answer copies y- and names the question
# twice (~120 tokens of the tiny tokenizer), so the synthesis budget (16 + 184) never cuts it: a cut
# answer would lose its Q[...] mark and look like a misattributed one.
VLLM_SERVER = ("use_vllm=true", "vllm_mode=server", "max_steps=2", "synthesis_extra_tokens=184")
VLLM_COLOCATE_TP2 = ("use_vllm=true", "vllm_mode=colocate", "vllm_tensor_parallel_size=2", "max_steps=2",
                     "synthesis_extra_tokens=184")
# A splice continuation's budget is a rollout's (max_completion_length): the stand-in's continuation (~30 tokens)
# must fit it, as must its locate answer (~50 tokens) the locate budget.
SPLICE_BUDGETS = ("max_completion_length=40", "splice_locate_tokens=64", "splice_continuation_tokens=48")


def sets(*items: str) -> list[str]:
    """TAPOConfig overrides as the script's `--set key=value` arguments."""
    return [arg for item in items for arg in ("--set", item)]


@dataclass
class Run:
    """What one launch left: exit status, combined output, and each process's rank{R}.json."""

    returncode: int
    output: str = field(repr=False)
    ranks: list[dict] = field(repr=False)

    def tail(self, chars: int = 4000) -> str:
        return self.output[-chars:]

    @property
    def main(self) -> dict:
        return self.ranks[0]

    @property
    def constructions(self) -> list[dict]:
        return self.main.get("constructions", [])

    def pairs_per_process(self) -> dict[int, list[int]]:
        """{global step: [construction requests built by process 0, by process 1, ...]}."""
        counts: dict[int, list[int]] = defaultdict(lambda: [0] * len(self.ranks))
        for rank, report in enumerate(self.ranks):
            for call in report.get("construct_calls", []):
                counts[call["step"]][rank] += call["requests"]
        return dict(counts)


def launch(out: Path, *script_args: str, timeout: int = TIMEOUT_S) -> Run:
    """Run tests/distributed_tapo.py on PROCESSES CPU processes; a hang (a process left waiting in a
    collective) is killed with its whole process group and reported as a failure."""
    command = [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(PROCESSES), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(SCRIPT), "--out", str(out), *script_args,
    ]
    # The checkout under test first on the path, whichever copy of tapo the environment has installed.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the {PROCESSES}-process run did not finish in {timeout} s (a process waiting in a "
                    f"collective?); output tail:\n{output[-4000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"), key=lambda p: int(p.stem[4:]))]
    return Run(process.returncode, output, ranks)


def assert_finished(run: Run) -> None:
    """The launch exited 0 and every process wrote its report; else each process's exception, then the tail."""
    if run.returncode != 0:
        errors = [r for r in run.ranks if r.get("error")]
        summary = "".join(f"  rank {r['rank']}: {r['error'].strip().splitlines()[-1]}\n" for r in errors)
        details = "".join(f"\n--- rank {r['rank']} ---\n{r['error'][-2000:]}" for r in errors) or run.tail()
        pytest.fail(f"the {PROCESSES}-process run exited with {run.returncode}:\n{summary}{details}")
    if len(run.ranks) != PROCESSES:
        pytest.fail(f"expected {PROCESSES} rank reports, got {len(run.ranks)}")


def assert_unequal_pair_counts(run: Run) -> None:
    """Precondition: some step gave the processes different numbers of pairs (the case under test)."""
    counts = run.pairs_per_process()
    if not any(len(set(c)) > 1 for c in counts.values()):
        pytest.fail(
            f"no step split the pairs unequally over the processes ({counts}); the setup no longer tests the case"
        )


def foreign_constructions(records: list[dict]) -> list[dict]:
    """Records whose text or analysis was not written for their own (question, y-).

    The stand-in names the question of the prompt it answers as Q[<question>], in the analysis and in the
    text it writes; a `self` reconstruction (also splice's self fallback) starts with the prompt's y-
    verbatim. A splice trajectory's prefix is y-'s own ids by construction, so only its continuation
    (the text) and its locate answer (the analysis) can come from another prompt.
    """
    foreign = []
    for record in records:
        mark = question_mark(record["question"])
        # a surprise-located splice has no locate answer: its analysis names a unit of y- itself
        own = mark in record["text"] and (mark in record["analysis"] or record["extra"].get("locator") == "surprise")
        if record["strategy"] == "self":
            own = own and record["text"].startswith(record["negative"])
        if not own:
            foreign.append(record)
    return foreign


def assert_own_pairs(run: Run) -> None:
    records = run.constructions
    if not records:
        pytest.fail("no constructed trajectory was logged")
    foreign = foreign_constructions(records)
    examples = "\n".join(
        f"  step {r['step']} question {r['question']!r}, y- {r['negative']!r}\n    -> text {r['text'][:110]!r}"
        for r in foreign[:3]
    )
    if foreign:
        pytest.fail(
            f"{len(foreign)} of {len(records)} constructions were built from another pair's synthesis "
            f"(pairs per process by step: {run.pairs_per_process()}):\n{examples}"
        )


def assert_synthesis_sampling(run: Run, report: dict) -> None:
    """Calls carrying construction prompts reach vLLM with the synthesis temperature and top-p and their phase's
    budget and stop strings (`_synthesis_sampling`): self synthesis max_completion_length + synthesis_extra_tokens,
    stop after </reconstruction>; splice locate splice_locate_tokens, stop after </analysis>; splice continuation
    splice_continuation_tokens (default max_completion_length), no stop. Rollout calls carry no stop."""
    args = run.main["args"]
    mcl, sampling = args["max_completion_length"], (args["synthesis_temperature"], args["synthesis_top_p"])
    phases = {"self": (mcl + args["synthesis_extra_tokens"], ["</reconstruction>"]),
              "locate": (args["splice_locate_tokens"], ["</analysis>"]),
              "continue": (args["splice_continuation_tokens"] or mcl, None)}
    synthesis = [c for c in report["standin_calls"] if set(c["kinds"]) - {"rollout"}]
    assert synthesis, f"rank {report['rank']}: no synthesis prompt reached the vLLM stand-in"
    for call in synthesis:
        [kind] = set(call["kinds"]) - {"rollout"}  # a call is one phase (dummy padding prompts read as rollouts)
        assert (call["max_tokens"], call["stop"]) == phases[kind], call["kinds"]
        assert (call["temperature"], call["top_p"]) == sampling, call["kinds"]
    for call in report["standin_calls"]:
        if set(call["kinds"]) == {"rollout"}:  # a rollout call (a construction call holds some real prompt)
            assert call["stop"] is None and call["max_tokens"] == mcl, call


@pytest.mark.parametrize("mode", ["server", "colocate-tp2"])
def test_self_constructions_come_from_their_own_pair(tmp_path, mode):
    run = launch(tmp_path, *sets("construction=self", *(VLLM_SERVER if mode == "server" else VLLM_COLOCATE_TP2)))
    assert_finished(run)
    assert_unequal_pair_counts(run)
    # server: the main process holds the client; colocate: every process runs its own engine
    for report in run.ranks if mode == "colocate-tp2" else [run.main]:
        assert_synthesis_sampling(run, report)
    assert_own_pairs(run)


def test_splice_with_self_fallback_comes_from_its_own_pair(tmp_path):
    run = launch(tmp_path, "--quote-not-found-every", "3",
                 *sets("construction=splice", "splice_fallback=self", *VLLM_SERVER, *SPLICE_BUDGETS))
    assert_finished(run)
    assert_unequal_pair_counts(run)
    strategies = {(r["strategy"], r["extra"].get("fallback")) for r in run.constructions}
    assert ("splice", None) in strategies and ("self", "self") in strategies, (
        f"expected both spliced and self-fallback constructions, got {strategies}"
    )
    assert_synthesis_sampling(run, run.main)
    assert_own_pairs(run)


def test_splice_with_drop_fallback_comes_from_its_own_pair(tmp_path):
    """A dropped locate leaves a process with fewer continuation prompts than another: the same slicing case."""
    run = launch(tmp_path, "--quote-not-found-every", "3",
                 *sets("construction=splice", "splice_fallback=drop", *VLLM_SERVER, *SPLICE_BUDGETS))
    assert_finished(run)
    assert_unequal_pair_counts(run)
    requested = sum(sum(c) for c in run.pairs_per_process().values())
    assert 0 < len(run.constructions) < requested, (
        f"{len(run.constructions)} constructions for {requested} pairs: expected some dropped, some built"
    )
    assert all(r["strategy"] == "splice" for r in run.constructions)
    # tapo/failed/<reason> counts both processes' failures (gathered), not only the main process's; summed over
    # the logged rows, which hold each generation once
    failed: dict[str, float] = defaultdict(float)
    for row in run.main["log_history"]:
        for key, value in row.items():
            if key.startswith("tapo/failed/"):
                failed[key.removeprefix("tapo/failed/")] += value
    assert sum(failed.values()) == requested - len(run.constructions) and failed["quote_not_found"] > 0, failed
    summary = run.main["log_history"][-1]  # the train summary repeats no generation's tapo/* values
    assert "train_runtime" in summary and not any(key.startswith("tapo/") for key in summary), summary
    assert_synthesis_sampling(run, run.main)
    assert_own_pairs(run)


def test_surprise_splice_comes_from_its_own_pair(tmp_path):
    """splice_locate surprise on the vLLM server path: the locate phase is a forward pass of the training model
    (collective: a process with fewer pairs pads), then only continuations reach vLLM, each for its own pair.
    A threshold this low locates a step in nearly every y-; the rest fall back to self."""
    run = launch(tmp_path, *sets("construction=splice", "splice_fallback=self", "splice_locate=surprise",
                                 "splice_surprise_threshold=0.01", *VLLM_SERVER, *SPLICE_BUDGETS))
    assert_finished(run)
    assert_unequal_pair_counts(run)
    spliced = [r for r in run.constructions if r["strategy"] == "splice"]
    assert spliced and all(r["extra"]["locator"] == "surprise" for r in spliced), run.constructions[:2]
    kinds = {kind for call in run.main["standin_calls"] for kind in call["kinds"]}
    assert "locate" not in kinds and "continue" in kinds, kinds  # no locate prompt ever reached vLLM
    assert_synthesis_sampling(run, run.main)
    assert_own_pairs(run)


def test_deferred_synthesis_is_its_own_call_and_comes_from_its_own_pair(tmp_path):
    """synthesis_schedule deferred on the vLLM server path: the pairs a step chose are synthesized in their own
    call at the next step (vLLM samples num_generations per unique prompt, so they cannot ride in the rollout
    call), every process passing the same number of prompts; no rollout call carries a construction prompt."""
    run = launch(tmp_path, *sets("construction=self", "synthesis_schedule=deferred", *VLLM_SERVER, "max_steps=3"))
    assert_finished(run)
    assert_unequal_pair_counts(run)
    steps = sorted({r["step"] for r in run.constructions})
    assert steps and steps[0] >= 2, steps  # nothing is trained in the step that chose it
    calls = run.main["standin_calls"]
    assert sum(set(c["kinds"]) == {"rollout"} for c in calls) == 3  # one rollout call a step, nothing riding in it
    assert_synthesis_sampling(run, run.main)  # every call with a synthesis prompt has the synthesis sampling
    assert_own_pairs(run)


def test_every_process_makes_the_same_generation_calls_without_vllm(tmp_path):
    """HF generate path, steps_per_generation 2: a batch with one eligible pair leaves process 1 without
    pairs (slots = 2 per process), yet it must make the same generation calls as process 0.

    Four problems make one generation batch (2 processes x 8 rows x 2 steps / 8 rollouts); only the first
    problem's rollouts can be right, and m_max=1 gives its group one pair.
    """
    run = launch(tmp_path, "--records", "4", "--reward", "one-query", "--model", "builtin:tiny-arith", *sets(
        "num_generations=8", "steps_per_generation=2", "gradient_accumulation_steps=2", "m_max=1", "max_steps=1",
        "max_completion_length=24"))
    assert_finished(run)
    counts = run.pairs_per_process()
    assert any(min(c) == 0 < max(c) for c in counts.values()), (
        f"no step left a process without pairs while another had some ({counts}); the setup no longer tests the case"
    )
    calls = [[(c["step"], c["num_generations"]) for c in r["generate_calls"]] for r in run.ranks]
    if any(c != calls[0] for c in calls):
        pytest.fail("processes made different generation calls (step, num_generations): "
                    + "; ".join(f"rank {r}: {len(c)} calls {c}" for r, c in enumerate(calls)))
