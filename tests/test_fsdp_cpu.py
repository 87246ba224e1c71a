"""A real sharded TAPO step on 2 CPU processes (gloo): tests/fsdp_tapo.py under torchrun.

accelerate 1.15 never enables FSDP on a CPU process group, so the script patches that one gate
(see its docstring); the sharding, the collectives and TRL's/TAPO's generation paths are the real ones.
Under FSDP (and ZeRO-3) HF generation gathers parameters collectively, so every process must make the
same generation calls: a process that skips one while the other generates hangs, or (gloo) aborts on
a mismatched collective. Each launch takes about 20 s on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "fsdp_tapo.py"
TIMEOUT = 300  # a hang is one possible outcome


def launch(out: Path, *args: str, env: dict | None = None) -> tuple[int | None, str, list[dict]]:
    """torchrun 2 processes of the script; (return code or None on timeout, output tail, rank reports)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(SCRIPT), "--out", str(out), "--pg-timeout", "60", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers: a hung rank must not outlive the test
        output, _ = process.communicate()
        code = None
    reports = []
    for rank in (0, 1):
        path = out / f"rank{rank}.json"
        reports.append(json.loads(path.read_text()) if path.is_file() else {"rank": rank, "stage": "no report"})
    # gloo's own diagnosis of a mismatched collective, which the torchrun summary at the end buries
    notes = [line.strip() for line in output.splitlines() if "collective mismatch" in line or "enforce fail" in line]
    return code, "\n".join(notes[:4] + [output[-3000:]]), reports


def where(reports: list[dict]) -> str:
    return "; ".join(
        f"rank {r['rank']}: stage={r.get('stage')} construction_requests={r.get('construction_requests')} "
        f"generate={[c['kind'] for c in r.get('generate_calls', [])]} error={r.get('error', '')[:300]}"
        for r in reports
    )


def check_sharded_step(code, output, reports, *, distributed_type: str, synthesis: bool = True) -> None:
    assert code == 0, f"exit {code} ({'timed out' if code is None else 'failed'}): {where(reports)}\n{output}"
    for r in reports:
        assert r["finished"] and r["global_step"] == 1, where(reports)
        assert r["distributed_type"] == distributed_type and r["world_size"] == 2, r
        assert r["tapo_file"].startswith(str(ROOT)), r["tapo_file"]  # this checkout's tapo
    # Really sharded: each rank holds part of the parameters, together all of them exactly once.
    full = reports[0]["full_param_numel"]
    local = [r["sharding"]["local_param_numel"] for r in reports]
    assert all(0 < n < full for n in local) and sum(local) == full, (local, full)
    # The invariant sharded generation needs: the same generate calls, in the same order, everywhere.
    calls = [[(c["kind"], c["max_new_tokens"]) for c in r["generate_calls"]] for r in reports]
    assert calls[0] == calls[1], where(reports)
    assert all(c["done"] for r in reports for c in r["generate_calls"])
    if synthesis:
        assert any(kind == "synthesis" for kind, _ in calls[0]), "no synthesis generation ran: the test did not exercise construction"
    # Stop strings reach the sharded model's generate with the tokenizer they need, for synthesis calls only;
    # or, in the call splice's phases share, each row's own stop through the row limits.
    for r in reports:
        for c in r["generate_calls"]:
            if c["kind"] == "synthesis" and not c["row_limits"]:
                assert c["stop_strings"] in (["</reconstruction>"], ["</analysis>"]) and c["tokenizer"], c
            elif c["kind"] == "synthesis":
                assert c["stop_strings"] is None and not c["tokenizer"], c
            else:
                assert c["stop_strings"] is None and not c["tokenizer"] and not c["row_limits"], c


@pytest.mark.parametrize("version", ["2", "1"])
def test_tapo_step_under_fsdp(tmp_path, version):
    """One pair on each rank: both synthesize, the step finishes, parameters stay sharded."""
    code, output, reports = launch(tmp_path, "--fsdp", version, "--pairs", "balanced")
    check_sharded_step(code, output, reports, distributed_type="DistributedType.FSDP")
    assert version == "1" or reports[0]["sharding"]["fsdp2_units"] > 0
    assert version == "2" or reports[0]["sharding"]["fsdp1_units"] > 0
    assert [r["construction_requests"] for r in reports] == [[1], [1]]


def test_rank_without_pairs_still_joins_generation(tmp_path):
    """One pair in the whole batch: rank 0 builds it, rank 1 has no request and must still generate."""
    code, output, reports = launch(tmp_path, "--fsdp", "2", "--pairs", "skew")
    assert [r.get("construction_requests") for r in reports] == [[1], [0]], where(reports)  # the case is set up
    check_sharded_step(code, output, reports, distributed_type="DistributedType.FSDP")


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")
def test_rank_without_pairs_under_zero3(tmp_path):
    """The same one-pair case under DeepSpeed ZeRO-3 on the CPU accelerator."""
    code, output, reports = launch(tmp_path, "--fsdp", "zero3", "--pairs", "skew", env={"DS_ACCELERATOR": "cpu"})
    assert [r.get("construction_requests") for r in reports] == [[1], [0]], where(reports)
    check_sharded_step(code, output, reports, distributed_type="DistributedType.DEEPSPEED")


def test_rank_without_pairs_joins_the_surprise_scoring_pass(tmp_path):
    """splice with splice_locate surprise: the locate phase is a forward pass of the sharded policy (no decode),
    and under FSDP a forward gathers parameters collectively: rank 1, without a pair, must score as rank 0 does,
    then join the continuation. A low threshold makes the one pair's y- surely cut. At a rollout temperature
    other than 1 the scores are the model's own (one row per forward, not TRL's fused head): the same count
    of forwards on both ranks."""
    code, output, reports = launch(tmp_path, "--fsdp", "2", "--pairs", "skew", "--construction", "splice",
                                   "--splice-locate", "surprise", "--surprise-threshold", "0.05",
                                   "--temperature", "0.6")
    assert [r.get("construction_requests") for r in reports] == [[1], [0]], where(reports)
    check_sharded_step(code, output, reports, distributed_type="DistributedType.FSDP", synthesis=False)
    # rank 0 scores its y- under the plain and the privileged prompt; rank 1 has no row but still takes part
    assert [[c["rows"] for c in r["score_calls"]] for r in reports] == [[2], [0]], where(reports)
    assert all(c["returned"] == c["rows"] and c["lengths_match"] for r in reports for c in r["score_calls"])
    # the located pair is continued: one call on each rank for the continuations and the self fallbacks (each
    # row ended by the row limits), to the longest phase budget on both
    assert [len(r["generate_calls"]) for r in reports] == [2, 2], where(reports)
    assert all(r["generate_calls"][1]["row_limits"] for r in reports), where(reports)


def test_deferred_riders_under_fsdp_with_a_rank_without_pairs(tmp_path):
    """synthesis_schedule deferred under FSDP2: step 1's one pair (rank 0's) rides in step 2's rollout call on
    rank 0 (a call with the synthesis budget, ended with its rollouts), while rank 1 generates its rollouts
    alone to theirs; sharded generation keeps both in step (synced_gpus), both join the rider's continuation
    call, and the run finishes."""
    code, output, reports = launch(tmp_path, "--fsdp", "2", "--pairs", "skew", "--schedule", "deferred",
                                   "--max-steps", "2")
    assert code == 0, f"exit {code} ({'timed out' if code is None else 'failed'}): {where(reports)}\n{output}"
    assert [r.get("construction_requests") for r in reports] == [[1], [0]], where(reports)  # chosen at step 1
    assert all(r["finished"] and r["global_step"] == 2 for r in reports), where(reports)
    calls = [[c["max_new_tokens"] for c in r["generate_calls"]] for r in reports]
    mcl = reports[0]["generate_calls"][0]["max_new_tokens"]
    assert calls[1][:2] == [mcl, mcl], where(reports)  # rank 1: two rollout calls, nothing riding
    assert calls[0][0] == mcl and calls[0][1] > mcl, where(reports)  # rank 0: its rider's budget at step 2
    # the riding call ends with the rollouts; a rider still writing goes on in a call of its own, which rank 1
    # joins with one dummy row of one token (collective generation): the same number of calls on both ranks
    assert len(calls[0]) == len(calls[1]) in (2, 3), where(reports)
    assert calls[1][2:] in ([], [1]), where(reports)
    assert all(c["done"] for r in reports for c in r["generate_calls"])
