r"""The math-verify checking service: ``python -P -m tapo.verify_worker``, started by ``tapo.rewards``.

It runs as its own interpreter, so it never imports the caller's main module: checking works from
an unguarded script, a notebook, a thread, a Ray or accelerate worker alike. It imports
math-verify once, warms it up, and then forks its *workers* from that warm state (milliseconds
each, no re-import), so a stuck worker is cheap to kill and replace.

Protocol: JSON lines, requests on stdin, answers on stdout.

- service -> parent: ``{"ready": PID}`` once warm, or ``{"error": TEXT}`` (then it exits).
- parent -> service: ``{"jobs": [[GOLD, PRED_OR_NULL], ...], "timeout_s": 5.0, "workers": 2}``.
- service -> parent: ``{"i": INDEX, "outcome": OUTCOME}`` for each job as it finishes, then
  ``{"done": true, "replaced": N}`` (N workers killed or lost and replaced). OUTCOME is one of
  ``correct``, ``wrong``, ``gold-unparsed``, ``timeout``, ``crash``.

Scheduling of one batch: ``workers`` items run at once. An item that has used ``_SET_ASIDE_CPU_S``
of CPU (wall time where the platform has no ``/proc``) is *set aside*: it keeps running, at the
lowest priority, until its own limit, and no longer holds a worker's place, so the queue moves on
beside it on a freshly forked worker (at most ``_MAX_SET_ASIDE`` at once). Stuck items therefore
run out their limits side by side instead of one after another, and only a stuck worker is
killed. Its own wall-clock limit (``timeout_s`` from when it was handed over) ends every item:
the worker is killed (SIGKILL) and the item is ``timeout``. A worker that dies holds exactly one
item, which is ``crash``; so is an item whose check raised. A worker may grow by at most
``_WORKER_EXTRA_MEMORY`` of address space: past it the check raises MemoryError (``crash``)
instead of the machine running out of memory, and the worker is replaced. The service's first
crash is told on stderr, with the check's traceback; later ones are only counted by the parent.

Lifetime: the service exits when its stdin closes or its parent process dies (checked twice a
second; on Linux, when started from the parent's main thread, it also gets SIGKILL with its
parent through ``PR_SET_PDEATHSIG``). Each worker gets SIGKILL when the service dies (Linux) and
exits when its request pipe closes. Both ignore SIGINT: Ctrl-C is for the parent to handle.
There is no multiprocessing machinery and no resource tracker. POSIX only (fork, pipes);
CPU time is read from /proc (Linux).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

_SET_ASIDE_CPU_S = 0.25  # an item past this much CPU is presumed stuck (a check takes ~0.01-0.2 s)
_MAX_SET_ASIDE = 16  # stuck items running beside the workers at once; more wait for a place
_WORKER_EXTRA_MEMORY = 1 << 30  # address space a worker may add (bytes); past it a check raises
_PARENT_POLL_S = 0.5  # how often an idle service checks that its parent is alive
_BUSY_POLL_S = 0.02  # how often CPU use is read while items run
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_NICEST = 19


# ---------------------------------------------------------------------------------------------
# The check itself (runs in a worker)
# ---------------------------------------------------------------------------------------------


def check(gold: str, pred: str | None) -> str:
    """Parse the gold, then (when given) the prediction, and compare: an outcome's name.

    math-verify's own timeouts are off (None): they use ``signal.alarm``, which a check stuck in
    C code (a huge integer power) never returns to, so the service's hard limit does the job.
    ``pred=None`` only checks that the gold parses (the fast path decided the verdict).
    """
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    # math-verify falls back to the raw string when sympy cannot read it; that is not a parse.
    if not any(not isinstance(item, str) for item in gold_parsed):
        return "gold-unparsed"
    if pred is None:
        return "wrong"
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return "correct"
    return "wrong"


def _warm_up() -> None:
    """Pay math-verify's imports and first-use costs once, before any worker is forked."""
    # math-verify warns once per call that timeouts are disabled; here that is by design.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for gold, pred in ((r"\sqrt{8}", r"2\sqrt{2}"), ("x^2+2x+1", "(x+1)^2"), (r"(1,\infty)", "[1,2]"),
                       (r"\{1,2\}", r"\{2,1\}"), ("x=4", "4")):
        check(gold, pred)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when its parent (thread) dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(0)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc, or None where there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Lines:
    """Complete lines read from a non-blocking pipe; ``eof`` once the writer has gone."""

    def __init__(self, fd: int):
        self.fd = fd
        self.eof = False
        self._partial = b""
        os.set_blocking(fd, False)

    def read(self) -> list[bytes]:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            self.eof = True
            return []
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return lines


@dataclass(eq=False)
class _Worker:
    pid: int
    requests: int  # fd: service -> worker
    results: _Lines  # fd: worker -> service
    job: int | None = None  # index of the item it holds
    started: float = 0.0  # monotonic time the item was handed over
    cpu_at_start: float | None = None
    set_aside: bool = False


@dataclass
class _Service:
    task: object  # (gold, pred) -> outcome name
    out: object  # binary file: answers to the parent
    parent_pid: int
    stdin: _Lines = field(init=False)
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    idle: list[_Worker] = field(default_factory=list)
    busy: list[_Worker] = field(default_factory=list)
    dying: list[int] = field(default_factory=list)  # killed, not reaped yet (pids)
    crash_told: bool = False  # the first crash went to stderr

    def __post_init__(self):
        self.stdin = _Lines(0)
        self.selector.register(0, selectors.EVENT_READ)

    # --- workers ---

    def fork(self) -> _Worker:
        """A new worker forked from this warm process."""
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        service_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the service's code
            try:
                inherited = [self.out.fileno(), to_worker_w, from_worker_r]
                if hasattr(self.selector, "fileno"):  # epoll / kqueue
                    inherited.append(self.selector.fileno())
                for worker in self.idle + self.busy:
                    inherited += [worker.requests, worker.results.fd]
                for fd in inherited:
                    os.close(fd)
                _worker_main(to_worker_r, from_worker_w, self.task, service_pid=service_pid)
            finally:
                os._exit(0)
        os.close(to_worker_r)
        os.close(from_worker_w)
        worker = _Worker(pid, to_worker_w, _Lines(from_worker_r))
        self.selector.register(from_worker_r, selectors.EVENT_READ, worker)
        return worker

    def discard(self, worker: _Worker, *, kill: bool) -> None:
        """Stop a worker (SIGKILL when ``kill``, else it is leaving or gone) and reap it."""
        if kill and worker.pid > 0:
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.selector.unregister(worker.results.fd)
        os.close(worker.results.fd)
        os.close(worker.requests)  # a worker that is not killed reads EOF and exits
        if worker.pid > 0:
            # Reaped later: a killed process at the lowest priority on a busy machine can take
            # a while to be scheduled to die, and the other items' deadlines must not wait.
            self.dying.append(worker.pid)
        for pool in (self.idle, self.busy):
            if worker in pool:
                pool.remove(worker)

    def reap(self, *, block: bool = False) -> None:
        for pid in list(self.dying):
            try:
                done = os.waitpid(pid, 0 if block else os.WNOHANG)[0]
            except ChildProcessError:
                done = pid
            if done:
                self.dying.remove(pid)

    def keep(self, workers: int) -> None:
        """Exactly ``workers`` idle workers, alive and warm for the next batch."""
        for worker in list(self.idle):
            if os.waitpid(worker.pid, os.WNOHANG)[0]:  # it exited while idle (e.g. killed by the OOM killer)
                worker.pid = -1  # reaped: discard must not wait for it again
                self.discard(worker, kill=False)
        while len(self.idle) > workers:
            self.discard(self.idle[-1], kill=True)
        while len(self.idle) < workers:
            self.idle.append(self.fork())

    def shutdown(self) -> None:
        for worker in self.idle + self.busy:
            self.discard(worker, kill=True)
        self.reap(block=True)

    # --- the parent ---

    def send(self, message: dict) -> None:
        try:
            self.out.write(json.dumps(message).encode() + b"\n")
            self.out.flush()
        except (BrokenPipeError, OSError):  # the parent is gone
            self.exit()

    def exit(self) -> None:
        self.shutdown()
        os._exit(0)

    def watch_parent(self, lines: list[bytes]) -> list[bytes]:
        """Exit once stdin has closed or the parent has died; else pass the lines on."""
        if self.stdin.eof or os.getppid() != self.parent_pid:
            self.exit()
        return lines

    # --- one batch ---

    def run(self, jobs: list, *, timeout_s: float, workers: int) -> None:
        set_aside_s = min(_SET_ASIDE_CPU_S, timeout_s / 4)
        waiting = deque(range(len(jobs)))
        replaced = 0
        self.keep(workers)
        while waiting or self.busy:
            now = time.monotonic()
            aside = sum(worker.set_aside for worker in self.busy)
            while waiting and len(self.busy) < workers + min(aside, _MAX_SET_ASIDE):
                worker = self.idle.pop() if self.idle else self.fork()
                index = waiting.popleft()
                worker.job, worker.started, worker.set_aside = index, now, False
                worker.cpu_at_start = _cpu_seconds(worker.pid)
                try:
                    _write_all(worker.requests, json.dumps(jobs[index]).encode() + b"\n")
                except BrokenPipeError:  # it died just now; the EOF below scores the job a crash
                    pass
                self.busy.append(worker)
            next_deadline = min(worker.started + timeout_s for worker in self.busy)
            wait_s = min(max(0.0, next_deadline - now), _BUSY_POLL_S)
            for key, _ in self.selector.select(wait_s):
                if key.data is None:
                    for line in self.watch_parent(self.stdin.read()):
                        raise RuntimeError(f"request during a batch: {line[:80]!r}")
                    continue
                worker = key.data
                lines = worker.results.read()
                if worker not in self.busy:  # idle: it has nothing to say; EOF means it died
                    if worker.results.eof:
                        self.discard(worker, kill=True)
                    continue
                for line in lines:
                    answer = json.loads(line)
                    if answer["outcome"] == "crash":
                        self.tell_crash(jobs[worker.job], answer.get("traceback", "(no traceback)"))
                    self.send({"i": worker.job, "outcome": answer["outcome"]})
                    worker.job = None
                    self.busy.remove(worker)
                    if answer.get("leaving"):  # it hit its memory cap and exits
                        self.discard(worker, kill=True)
                        replaced += 1
                    elif worker.set_aside:  # niceness cannot be lowered again without privileges
                        self.discard(worker, kill=True)
                    else:
                        self.idle.append(worker)
                if worker.job is not None and worker.results.eof:  # it died: its item killed it
                    self.tell_crash(jobs[worker.job], "its worker died (killed, or exited) before it answered")
                    self.send({"i": worker.job, "outcome": "crash"})
                    self.discard(worker, kill=False)
                    replaced += 1
            self.watch_parent([])
            self.reap()
            now = time.monotonic()
            for worker in list(self.busy):
                if now - worker.started >= timeout_s:
                    self.send({"i": worker.job, "outcome": "timeout"})
                    self.discard(worker, kill=True)
                    replaced += 1
                elif not worker.set_aside and self._used(worker, now) >= set_aside_s:
                    worker.set_aside = True  # it keeps running, out of the way of the others
                    try:
                        os.setpriority(os.PRIO_PROCESS, worker.pid, _NICEST)
                    except OSError:
                        pass
        self.keep(workers)  # fresh forks start at the service's (normal) priority
        self.send({"done": True, "replaced": replaced})

    def tell_crash(self, job: list, why: str) -> None:
        """The first crash on stderr, once: a crash scores 0 quietly, and a broken check would
        otherwise only show as a count. Here, not in the worker: workers are forked fresh."""
        if self.crash_told:
            return
        self.crash_told = True
        gold, pred = job
        sys.stderr.write(
            f"tapo.verify_worker: the check of gold={gold!r:.200} pred={pred!r:.200} crashed (it scores 0; "
            f"later crashes are only counted, see tapo.rewards.verifier_stats):\n"
            f"{why.rstrip()}\n"
        )
        sys.stderr.flush()

    @staticmethod
    def _used(worker: _Worker, now: float) -> float:
        """CPU seconds the worker has spent on its item (wall seconds without /proc)."""
        cpu = _cpu_seconds(worker.pid)
        if cpu is None or worker.cpu_at_start is None:
            return now - worker.started
        return cpu - worker.cpu_at_start

    def serve(self) -> None:
        while True:
            for _key, _ in self.selector.select(_PARENT_POLL_S):
                pass
            for line in self.watch_parent(self.stdin.read()):
                request = json.loads(line)
                self.run(request["jobs"], timeout_s=float(request["timeout_s"]), workers=int(request["workers"]))
            self.watch_parent([])
            self.reap()
            for worker in list(self.idle):  # one that died while idle (its pipe reads EOF)
                if worker.results.read() or worker.results.eof:
                    self.discard(worker, kill=True)


def _worker_main(requests_fd: int, results_fd: int, task, *, service_pid: int) -> None:
    """A worker: one item at a time from the request pipe, until it closes."""
    _die_with_parent(service_pid)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the service's stdin is the parent's pipe: not for a worker
    os.close(devnull)
    _limit_memory()
    with os.fdopen(requests_fd, "rb") as requests, os.fdopen(results_fd, "wb", buffering=0) as results:
        for line in requests:
            gold, pred = json.loads(line)
            try:
                outcome = task(gold, pred)
                outcome = getattr(outcome, "value", outcome)  # a stand-in may return an enum
            except MemoryError:  # its state is suspect now: answer, then leave for a fresh fork
                results.write(b'{"outcome": "crash", "leaving": true, "traceback": "MemoryError: past its cap"}\n')
                os._exit(0)
            except Exception:  # noqa: BLE001 - a failing check scores 0; it must not stop training
                results.write(json.dumps({"outcome": "crash", "traceback": traceback.format_exc()}).encode() + b"\n")
                continue
            results.write(json.dumps({"outcome": outcome}).encode() + b"\n")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _limit_memory() -> None:
    """Cap the worker's address space, so a runaway check raises MemoryError instead of OOM."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = in_use + _WORKER_EXTRA_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no rlimits: no cap


def _load(task: str):
    """``module:function`` -> the function."""
    module, _, name = task.partition(":")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tapo.verify_worker", description=__doc__.split("\n")[0])
    parser.add_argument("--parent", type=int, required=True, help="pid of the parent; the service dies with it")
    parser.add_argument("--task", default=f"{__name__}:check", help="module:function that checks one item")
    parser.add_argument("--workers", type=int, default=0, help="workers to fork before reporting ready")
    parser.add_argument("--death-signal", action="store_true", help="Linux: SIGKILL when the parent dies")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.death_signal:
        _die_with_parent(args.parent)
    elif os.getppid() != args.parent:
        return
    # Answers go on a private copy of stdout; fd 1 becomes stderr, so a stray print() anywhere
    # (math-verify, sympy, a worker) can never corrupt the protocol.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        task = _load(args.task)
        _warm_up()
    except BaseException as error:  # noqa: BLE001 - tell the parent why, then exit
        out.write(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode() + b"\n")
        out.flush()
        raise SystemExit(1) from None
    gc.collect()
    gc.freeze()  # forked workers then share the warm heap instead of copying it page by page
    service = _Service(task=task, out=out, parent_pid=args.parent)
    service.keep(args.workers)
    service.send({"ready": os.getpid()})
    service.serve()


if __name__ == "__main__":
    main()
