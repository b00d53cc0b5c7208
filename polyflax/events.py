"""Reading the scalars of TensorBoard event files (tensorboardX writes them, but cannot read).

Used by the plots and run summaries of `scripts/` and by the tests; the
training and evaluation code only write events.
"""

from __future__ import annotations

import os
import pathlib
import struct

from tensorboardX.proto import event_pb2


def event_files(logdir: str | os.PathLike) -> list[pathlib.Path]:
  """The event files directly in `logdir`, oldest first (their names start with a timestamp)."""
  return sorted(pathlib.Path(logdir).glob("events.out.tfevents.*"))


def read_events(path: str | os.PathLike) -> list[event_pb2.Event]:
  """The `Event` protos of one event file.

  Event files are TFRecord-framed: an 8-byte length, a 4-byte checksum of
  it, the record, and a 4-byte checksum of the record.
  """
  events = []
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      events.append(event_pb2.Event.FromString(f.read(length)))
      f.read(4)
  return events


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the event files directly in `logdir`, in file order."""
  scalars: dict[str, list[tuple[int, float]]] = {}
  for path in event_files(logdir):
    for event in read_events(path):
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def latest_by_step(values: list[tuple[int, float]]) -> list[tuple[int, float]]:
  """The points of one tag with a resumed run's repeats resolved: the last value of each step,
  in step order (a run killed after step s and resumed from an earlier
  checkpoint logs some steps twice; TensorBoard shows the later ones)."""
  return sorted(dict(values).items())
