"""Stopping a training run on a signal, at a step boundary, after saving.

`GracefulStop` turns SIGTERM and SIGINT (Ctrl-C) into a request the
training loop honours; the loop then raises `TrainingInterrupted`, which
carries the process's exit status.
"""

from __future__ import annotations

import signal
import threading

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

  The loop finishes its step, saves a checkpoint, waits for it and raises
  `TrainingInterrupted`, whose exit code is 128 + the signal number (143 for
  SIGTERM, 130 for SIGINT); the checkpoint holds the data iterator's position,
  so a rerun continues exactly. A second signal while saving is ignored so
  the save cannot be cut short (SIGKILL still can; the last complete
  checkpoint then survives, see checkpoints.py). With several processes a
  signal reaches each one on its own; they compare notes at every log step
  (`agree`) and all stop at the same step.
  Handlers are installed only in the main thread and restored on exit.
  """

  def __init__(self):
    self.reason = None
    self.exit_code = 0
    self._agreed = False
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.reason is not None and (self._agreed or jax.process_count() == 1)

  def agree(self) -> None:
    """Across processes: if any has a signal, every process's stop is requested."""
    flags = multihost_utils.process_allgather(np.int32(self.reason is not None))
    if np.any(flags):
      self._agreed = True
      if self.reason is None:
        self.reason, self.exit_code = "another process received a stop signal", 128 + 15

  def _handle(self, signum, _frame):
    if self.reason is None:
      name = signal.Signals(signum).name
      self.reason = f"received {name}"
      self.exit_code = 128 + signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False
