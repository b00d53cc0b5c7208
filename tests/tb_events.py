"""Reading TensorBoard event files in tests (tensorboardX writes, but cannot read)."""

import pathlib
import struct

from tensorboardX.proto import event_pb2


def read_scalars(logdir):
  """{tag: [(step, value)]} of the event files in `logdir` (TFRecord-framed Event protos)."""
  scalars = {}
  for path in sorted(pathlib.Path(logdir).glob("events.out.tfevents.*")):
    with open(path, "rb") as f:
      while header := f.read(12):
        (length,) = struct.unpack("<Q", header[:8])
        event = event_pb2.Event.FromString(f.read(length))
        f.read(4)
        for value in event.summary.value:
          if value.HasField("simple_value"):
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars
