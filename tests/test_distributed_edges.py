"""Two CPU processes (gloo) where one process's data differs from the other's in a way that changes what
TAPO does there: its constructions are unscorable, or its share of a checkpoint's pending pairs is missing.
Every collective must still match (a mismatch hangs, and the launch is killed as a failure), and the counts
the main process logs must be those of both processes.

Each test launches tests/distributed_tapo.py under `accelerate launch` (tests/test_vllm_paths.py's `launch`).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from tapo.core import PendingConstruction
from tapo.engine.deferred import PENDING_FILE, load_pending
from tests.test_vllm_paths import VLLM_SERVER, assert_finished, assert_own_pairs, assert_unequal_pair_counts, launch, sets

# HF generate, riders in the rollout call; builtin:tiny-arith ends its answers (a random model's rollouts are all
# cut at their budget, and a cut rollout is never a y-)
DEFERRED_HF = ("--model", "builtin:tiny-arith", *sets("synthesis_schedule=deferred", "max_completion_length=24",
                                                      "synthesis_extra_tokens=24"))


def logged_totals(run, prefix: str) -> dict[str, float]:
    """{key without prefix: sum over the main process's logged steps} (the summary row holds no tapo/* key)."""
    totals: dict[str, float] = defaultdict(float)
    for row in run.main["log_history"]:
        for key, value in row.items():
            if key.startswith(prefix):
                totals[key.removeprefix(prefix)] += value
    return dict(totals)


def test_constructions_one_process_cannot_score_are_counted_and_not_trained(tmp_path):
    """Process 1's reward function scores none of its constructions (None), process 0's scores all of them:
    only process 0's are trained, and `tapo/failed/unscorable` counts exactly process 1's."""
    run = launch(tmp_path, "--reward", "unscorable-constructions-on-rank1",
                 *sets("construction=self", *VLLM_SERVER))
    assert_finished(run)
    assert_unequal_pair_counts(run)
    requests = [sum(call["requests"] for call in report["construct_calls"]) for report in run.ranks]
    assert requests[1] > 0 and requests[0] > 0, requests
    failed = logged_totals(run, "tapo/failed/")
    assert failed == {"unscorable": requests[1]}, (failed, requests)
    assert len(run.constructions) == requests[0] == logged_totals(run, "tapo/")["built"]
    assert all(record["reward"] is not None for record in run.constructions)
    assert_own_pairs(run)


@pytest.fixture(scope="module")
def deferred_checkpoint(tmp_path_factory) -> Path:
    """A 2-step deferred run on 2 processes that saved checkpoint-1 (step 1's pairs pending on each process) and
    checkpoint-2; process 1 is slow to save its pending pairs."""
    out = tmp_path_factory.mktemp("deferred-first")
    run = launch(out, *DEFERRED_HF, "--slow-pending-save", "1",
                 *sets("max_steps=2", "save_strategy=steps", "save_steps=1"))
    assert_finished(run)
    return out / "run" / "checkpoint-1"


def test_every_processes_pending_pairs_are_saved_before_the_checkpoint_counts_as_complete(deferred_checkpoint):
    """trainer_state.json (what marks a checkpoint complete) is written by the main process after every process
    saved its pending pairs, the slow one included."""
    for checkpoint in (deferred_checkpoint, deferred_checkpoint.with_name("checkpoint-2")):
        state = (checkpoint / "trainer_state.json").stat().st_mtime_ns
        for rank in (0, 1):
            assert (checkpoint / PENDING_FILE.format(rank=rank)).stat().st_mtime_ns < state, (checkpoint.name, rank)


def pending_pairs(checkpoint: Path, rank: int) -> list[tuple[str, int]]:
    """(query id, y- index) of each pair that process `rank` saved as pending in `checkpoint` (a construction
    still to generate, or one that already failed: both count as tried when the round is built)."""
    found, pending = load_pending(checkpoint, rank, 2)
    assert found, f"{checkpoint} has no pending file for process {rank}"
    pairs = [x.request.pair if isinstance(x, PendingConstruction) else x.pair for x in (pending.items if pending else [])]
    return [(pair.query_id, pair.negative_index) for pair in pairs]


def resume(tmp_path: Path, checkpoint: Path):
    return launch(tmp_path, *DEFERRED_HF, "--resume", str(checkpoint),
                  *sets("max_steps=3", "save_strategy='no'", f"output_dir={tmp_path / 'resumed'}"))


def test_a_deferred_run_resumed_on_two_processes_builds_both_processes_pending_pairs(tmp_path, deferred_checkpoint):
    pending = [pending_pairs(deferred_checkpoint, rank) for rank in (0, 1)]
    assert pending[0] or pending[1], "checkpoint-1 holds no pending pair on either process: nothing is tested"
    run = resume(tmp_path, deferred_checkpoint)
    assert_finished(run)
    step2 = next(row for row in run.main["log_history"] if row.get("step") == 2)
    assert step2["tapo/tried"] == len(pending[0]) + len(pending[1])  # both processes' pairs, each built once
    built = {(r["query_id"], r["negative_index"]) for r in run.constructions if r["step"] == 2}
    assert built <= set(pending[0]) | set(pending[1])
    assert len(built) == step2["tapo/built"]
    assert not any("pending construction pairs" in w for report in run.ranks for w in report["warnings"])


def test_a_checkpoint_missing_one_processes_pending_pairs_resumes_with_none_on_every_process(tmp_path,
                                                                                           deferred_checkpoint):
    """Process 1's file is gone (a copy that lost it): neither process takes its pairs back, so their generation
    calls still match, and both say why."""
    checkpoint = tmp_path / "checkpoint-1"
    shutil.copytree(deferred_checkpoint, checkpoint)
    (checkpoint / PENDING_FILE.format(rank=1)).unlink()
    run = resume(tmp_path, checkpoint)
    assert_finished(run)
    step2 = next(row for row in run.main["log_history"] if row.get("step") == 2)
    assert "tapo/tried" not in step2 and not [r for r in run.constructions if r["step"] == 2]
    for report in run.ranks:
        assert any("lacks some process's pending construction pairs" in w for w in report["warnings"]), report["rank"]
