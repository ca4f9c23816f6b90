"""Stopping a long run cleanly: SIGINT / SIGTERM set a flag that the run asks between stages and
between stretches of optimisation steps (never raising into JAX / XLA), so what exists can be
written, marked partial, before the command exits with 128 + the signal number."""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["Interrupted", "StopRequest"]


class Interrupted(Exception):
    """A stop was requested (SIGINT / SIGTERM) before anything worth writing existed."""

    def __init__(self, signum: int, stage: str):
        self.signum = signum
        self.stage = stage
        super().__init__(f"interrupted by {signal.Signals(signum).name} {stage}")



class StopRequest:
    """A stop flag set by SIGINT / SIGTERM (`installed`), asked between stretches of
    optimisation steps and between the stages of a run. The handler only sets the flag (it never
    raises into JAX / XLA, so a signal during compilation takes effect when compilation
    returns); a second signal exits at once."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def request(self, signum: int) -> None:
        self.signum = signum

    def check(self, stage: str) -> None:
        """Raises Interrupted if a stop was requested; `stage` says where ("before ...")."""
        if self.signum is not None:
            raise Interrupted(self.signum, stage)

    def _handle(self, signum, frame):
        if self.signum is not None:
            os.write(2, f"\nreconstruct: second {signal.Signals(signum).name}: exiting now, writing nothing more\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"\nreconstruct: {signal.Signals(signum).name} received: stopping after the current step (send it again to exit at once)\n".encode())

    @contextlib.contextmanager
    def installed(self):
        """Handles SIGINT and SIGTERM while the block runs (main thread only; elsewhere the
        flag can still be set with `request`)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
