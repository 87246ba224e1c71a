"""A Ctrl-C that reaches the run even when some code swallows it.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives; if that is
a destructor, a weakref or garbage-collector callback, CPython prints "Exception ignored in ..." and
goes on, and the run would train to its end as if never interrupted. So while a run trains, SIGINT
also sets a flag, and the trainer raises KeyboardInterrupt again at the next step end when the first
one did not stop it. The command then reports it as any Ctrl-C (`tapo.commands.train`): the last
checkpoint and the command that resumes.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from transformers import TrainerCallback


class InterruptGuard(TrainerCallback):
    """Re-raises a Ctrl-C that was received but did not stop training, at the next (sub)step end."""

    def __init__(self) -> None:
        self.received = False

    def on_signal(self, signum, frame) -> None:
        self.received = True
        raise KeyboardInterrupt

    def unraisable(self, report, *, fallback) -> None:
        """sys.unraisablehook: the swallowed Ctrl-C is raised again at the step end, so its "Exception
        ignored" traceback would only confuse; every other report goes to `fallback`."""
        if not (self.received and isinstance(report.exc_value, KeyboardInterrupt)):
            fallback(report)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received:
            raise KeyboardInterrupt

    on_substep_end = on_step_end  # gradient accumulation: the micro-steps between optimizer steps


@contextmanager
def interrupts_kept(trainer) -> Iterator[InterruptGuard]:
    """While inside, SIGINT raises KeyboardInterrupt as usual and is also kept for `InterruptGuard`.

    The swallowed interrupt's "Exception ignored" report is left out (`InterruptGuard.unraisable`).
    Only from the main thread and only over Python's own handler: a handler the caller installed (a
    notebook, a launcher) is left alone, and so is everything outside the block.
    """
    guard = InterruptGuard()
    owned = (threading.current_thread() is threading.main_thread()
             and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    hook = sys.unraisablehook
    if owned:
        signal.signal(signal.SIGINT, guard.on_signal)
        sys.unraisablehook = functools.partial(guard.unraisable, fallback=hook)
    trainer.add_callback(guard)
    try:
        yield guard
    finally:
        trainer.remove_callback(guard)
        if owned:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.unraisablehook = hook
