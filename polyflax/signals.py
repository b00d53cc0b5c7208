"""Stopping a training run on a signal, at a step boundary, after saving.

`GracefulStop` turns SIGTERM and SIGINT (Ctrl-C) into a request the
training loop honours, and answers the signal at once with one line saying
the step it will stop after; the loop then saves and raises
`TrainingInterrupted`, which carries the process's exit status.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils


class TrainingInterrupted(Exception):
  """Training stopped on a signal after saving a checkpoint."""

  def __init__(self, reason: str, exit_code: int):
    super().__init__(reason)
    self.exit_code = exit_code


class GracefulStop:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a request the training loop honours.

  The loop keeps `boundary` at the step a stop requested now would come
  after: before it hands step N to jax it sets `boundary = N`, then asks
  `should_stop(finished)`. A signal records the boundary it came at as
  `stop_after` and is answered at once by `announce` with one line
  ("received SIGINT: stopping after step N, then saving a checkpoint"), so
  what the line promises is what the loop does, wherever the signal lands.
  Python runs the handler in the main thread between bytecodes: when the
  loop is waiting inside jax for a step, the line comes when that step is
  done. Should `announce` fail there (the main thread was in the middle of
  writing to the same stream), `announce_pending` says it from the loop.

  After the stop the loop saves a checkpoint, waits for it and raises
  `TrainingInterrupted`, whose exit code is 128 + the signal number (143 for
  SIGTERM, 130 for SIGINT); the checkpoint holds the data iterator's position,
  so a rerun continues exactly. A second signal while saving is ignored so
  the save cannot be cut short (SIGKILL still can; the last complete
  checkpoint then survives, see checkpoints.py). With several processes a
  signal reaches each one on its own; they compare notes at every log step
  (`agree`) and all stop at the same step.
  Handlers are installed only in the main thread and restored on exit.
  """

  def __init__(self, announce: Callable[[str], None] | None = None):
    self.reason = None
    self.exit_code = 0
    self.boundary = 0
    self.stop_after = None
    self._announce = announce
    self._announced = False
    self._agreed = False
    self._previous = {}

  def should_stop(self, finished_step: int) -> bool:
    """Whether the loop stops now, after `finished_step` (handed over, maybe still running)."""
    if jax.process_count() > 1:
      return self._agreed
    return self.reason is not None and finished_step >= self.stop_after

  def agree(self, step: int) -> None:
    """Across processes, at `step`: if any has a signal, every process stops after it."""
    flags = multihost_utils.process_allgather(np.int32(self.reason is not None))
    if np.any(flags) and not self._agreed:
      self._agreed = True
      self.stop_after = step
      if self.reason is None:
        self.reason, self.exit_code = "another process received a stop signal", 128 + 15
        self._say(f"{self.reason}: stopping after step {step}, then saving a checkpoint")

  def announce_pending(self) -> None:
    """Says the signal's line if the handler could not; the loop calls it at every step."""
    if self.reason is not None and not self._announced:
      self._say(self._notice())

  def _notice(self) -> str:
    if jax.process_count() > 1:
      return (f"{self.reason}: stopping with the other processes at the next log step, "
              "then saving a checkpoint")
    return f"{self.reason}: stopping after step {self.stop_after}, then saving a checkpoint"

  def _say(self, line: str) -> None:
    if self._announce is None:
      self._announced = True
      return
    try:
      self._announce(line)
      self._announced = True
    except RuntimeError:  # a reentrant write to the stream the main thread was writing to
      pass

  def _handle(self, signum, _frame):
    if self.reason is None:
      self.reason = f"received {signal.Signals(signum).name}"
      self.exit_code = 128 + signum
      self.stop_after = self.boundary
      self._say(self._notice())

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False
