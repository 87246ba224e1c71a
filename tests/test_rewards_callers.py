r"""Answer checking from any caller: unguarded scripts, ``-c``, stdin, threads; and no process outlives its parent.

Every test runs a real caller in a subprocess, as a user's program would: checking must never
import the caller's main module, and killing the caller (SIGKILL or SIGTERM) must take the
checking service and its workers with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]

# Top-level code, no `if __name__ == "__main__":` guard; every check here goes past the fast
# path to math-verify (a radical, a set, an expression), from the main thread and from a thread.
UNGUARDED = textwrap.dedent(
    r"""
    import threading
    from tapo.rewards import is_correct, math_reward, verifier_stats

    print("main", is_correct(r"\boxed{2\sqrt{2}}", r"\sqrt{8}"), is_correct(r"\boxed{2\sqrt{3}}", r"\sqrt{8}"))
    found = []
    thread = threading.Thread(target=lambda: found.append(math_reward([r"\boxed{\{2,1\}}", r"\boxed{(x+1)^2}"],
                                                                      [r"\{1,2\}", "x^2+2x+1"])))
    thread.start()
    thread.join()
    print("thread", found[0])
    print("calls", verifier_stats().calls)
    """
)


def _env() -> dict[str, str]:
    """This checkout's tapo first, whatever is installed; one thread per library."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("how", ["script", "dash-c", "stdin"])
def test_an_unguarded_caller_checks_past_the_fast_path(tmp_path, how):
    script = tmp_path / "score.py"
    script.write_text(UNGUARDED)
    command, stdin = {
        "script": ([sys.executable, str(script)], None),
        "dash-c": ([sys.executable, "-c", UNGUARDED], None),
        "stdin": ([sys.executable, "-"], UNGUARDED),
    }[how]
    result = subprocess.run(command, input=stdin, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:3] == ["main True False", "thread [1.0, 1.0]", "calls 4"], result.stderr[-3000:]


def test_the_service_runs_this_checkout_even_from_another_checkouts_folder(tmp_path):
    # A `tapo` folder in the working directory (another checkout) must not be what the service runs.
    (tmp_path / "tapo").mkdir()
    (tmp_path / "tapo" / "__init__.py").write_text("")
    (tmp_path / "tapo" / "verify_worker.py").write_text("raise SystemExit('the wrong tapo')\n")
    code = r"from tapo.rewards import is_correct; print(is_correct(r'\boxed{2\sqrt{2}}', r'\sqrt{8}'))"
    result = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=_env(), capture_output=True,
                            text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "True"), result.stderr[-3000:]


# The caller starts checking, then keeps a worker busy on an item that would run for minutes.
# (Guarded, so that it also runs with multiprocessing-based checking.)
BUSY_CALLER = textwrap.dedent(
    r"""
    import sys, threading
    from tapo.rewards import is_correct

    def work():
        is_correct(r"\boxed{2\sqrt{2}}", r"\sqrt{8}")
        print("checking", flush=True)
        is_correct(r"\boxed{9^{9^{9^{9}}}}", "1", timeout_s=600)

    if __name__ == "__main__":
        if sys.argv[1] == "thread":
            threading.Thread(target=work).start()
        else:
            work()
    """
)


def _alive(processes) -> list:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize(
    ("signum", "where"),
    [(signal.SIGKILL, "main"), (signal.SIGKILL, "thread"), (signal.SIGTERM, "main")],
    ids=["sigkill", "sigkill-checking-from-a-thread", "sigterm"],
)
def test_no_checking_process_outlives_a_killed_caller(tmp_path, signum, where):
    script = tmp_path / "busy.py"
    script.write_text(BUSY_CALLER)
    caller = subprocess.Popen([sys.executable, str(script), where], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    descendants = []
    try:
        assert caller.stdout.readline().strip() == "checking", caller.stderr.read()[-3000:]
        time.sleep(0.5)  # the stuck item is on a worker now
        descendants = psutil.Process(caller.pid).children(recursive=True)
        assert len(descendants) >= 3  # the service and its (two) workers
        assert not any("resource_tracker" in " ".join(p.cmdline()) for p in descendants)
        caller.send_signal(signum)
        caller.wait(timeout=10)
        deadline = time.monotonic() + 5.0
        while _alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(descendants) == []
    finally:  # leave nothing behind, whatever failed
        caller.kill()
        caller.wait()
        for process in _alive(descendants):
            process.kill()
