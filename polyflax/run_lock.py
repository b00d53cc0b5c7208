"""One training run per workdir: the lock a run holds, and the line a second run is refused with.

A training run holds its workdir's `training.lock` (`workdir.lock_file`)
from its first checks to its end (`hold`), by an advisory lock
(`fcntl.flock`) on the open file. The kernel releases it when the process
ends, however it ends (a return, an exception, Ctrl-C, SIGTERM, kill -9),
so a lock file left behind never blocks a run: only a living process that
holds it does. While it is held, the file names its holder (host, PID,
start, command, as JSON); a second run on the workdir reads it and stops at
once, before it makes data or compiles anything, with `WorkdirInUse`: one
line naming the holder, exit status 2. A clean end empties the file.

The processes of a run on several hosts are one holder: process 0 takes
the lock, and every process gets its verdict (`broadcast_one_to_all`), so
all of them go on or all stop. (On a filesystem shared by the hosts,
`flock` is as good as that filesystem's locking; NFS version 4 has it.)

Evaluation, prediction and export take no lock: they read complete
checkpoints, which a run in progress never changes (a save is written aside
and renamed into place, see checkpoints.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Iterator

import jax
import numpy as np

from polyflax import checkpoints
from polyflax import run_record
from polyflax import workdir as workdir_lib

# How long a refused run waits for the holder to write its name, in the
# instant after it took the lock (then it says the holder is unnamed).
_NAME_PATIENCE_S = 2.0
# Bytes of the verdict process 0 sends the others (a one-line message).
_VERDICT_BYTES = 1024


class WorkdirInUse(checkpoints.CheckpointError):
  """Another training run holds the workdir (one line naming it)."""


def holder() -> dict:
  """What the lock file says of this process: host, PID, start, command."""
  return {"host": socket.gethostname(), "pid": os.getpid(), "since": run_record.now(),
          "command": run_record.command_line()}


def _describe(workdir: str, held_by: dict | None) -> str:
  if held_by is None:
    who = "a process that has not written its name into " + workdir_lib.lock_file(workdir)
  else:
    who = (f"host {held_by.get('host')}, PID {held_by.get('pid')}, "
           f"since {held_by.get('since')}")
  return (f"{workdir} is in use by another training run ({who}): wait for it to end or stop "
          "it, or train in another --workdir")


def _read_holder(handle) -> dict | None:
  handle.seek(0)
  try:
    held_by = json.loads(handle.read() or "null")
  except ValueError:  # being written
    return None
  return held_by if isinstance(held_by, dict) and "pid" in held_by else None


class Lock:
  """A held workdir lock (`acquire`); `release` lets it go and empties the file."""

  def __init__(self, handle):
    self._handle = handle

  @classmethod
  def acquire(cls, workdir: str) -> "Lock":
    """Takes the lock of `workdir` (which must exist) and writes this process's name into it.

    Raises:
      WorkdirInUse: naming the holder, when a living process holds it.
    """
    handle = open(workdir_lib.lock_file(workdir), "a+", encoding="utf-8")  # never truncates
    deadline = time.monotonic() + _NAME_PATIENCE_S
    try:
      while True:
        try:
          fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
          break
        except BlockingIOError:
          held_by = _read_holder(handle)
          if held_by is not None or time.monotonic() > deadline:
            raise WorkdirInUse(_describe(workdir, held_by)) from None
          time.sleep(0.05)
      handle.truncate(0)
      handle.write(json.dumps(holder()))
      handle.flush()
    except BaseException:
      handle.close()  # releases the lock if it was taken
      raise
    return cls(handle)

  def release(self) -> None:
    """Empties the file and lets the lock go (the process ending does too)."""
    if self._handle.closed:
      return
    try:
      self._handle.truncate(0)
      self._handle.flush()
    except OSError:  # the file is only informative; the lock goes with the handle
      pass
    finally:
      self._handle.close()


def _share_verdict(refusal: str) -> str:
  """Process 0's refusal ('' when it holds the lock), told to every process."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  encoded = refusal.encode("utf-8")[:_VERDICT_BYTES]
  message = np.zeros(_VERDICT_BYTES, np.uint8)
  message[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  shared = np.asarray(multihost_utils.broadcast_one_to_all(message), np.uint8)
  return shared.tobytes().rstrip(b"\0").decode("utf-8", errors="replace")


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock (process 0 for every process of the run) for the `with` block.

  `workdir` must exist on process 0.

  Raises:
    WorkdirInUse: on every process, at once, when another run holds it.
  """
  lock, failure, refusal = None, None, ""
  if jax.process_index() == 0:
    try:
      lock = Lock.acquire(workdir)
    except Exception as error:  # pylint: disable=broad-except
      failure, refusal = error, str(error) or type(error).__name__
  if jax.process_count() > 1:  # the others learn process 0's verdict; none waits alone
    refusal = _share_verdict(refusal)
  if failure is not None:
    raise failure
  if refusal:
    raise WorkdirInUse(f"process 0: {refusal}")
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
