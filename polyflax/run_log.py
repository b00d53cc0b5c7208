"""What a training run writes to TensorBoard: windowed training metrics, scalars, hyperparameters.

`LogWindow` gathers the metric sums of the steps between two logs without
waiting for them; `write_scalars` and `write_hparams` write a run's event
file (process 0 only: the others pass no writer).
"""

from __future__ import annotations

import time

import jax
import ml_collections

from polyflax import metrics as metrics_lib

_add_sums_on_device = jax.jit(metrics_lib.add_sums)


class LogWindow:
  """The bookkeeping of one logging window: metric sums, examples, time, finiteness.

  Step results stay on the device until the window is read (`first_nonfinite`,
  `metrics`), so logging does not stall the steps in between.
  """

  def __init__(self, track_finite: bool):
    self._track_finite = track_finite
    self.restart()

  def restart(self) -> None:
    """Starts a new window now, after a log."""
    self._sums, self._finite = None, []
    self.restart_clock()

  def restart_clock(self) -> None:
    """Restarts the examples/s count and clock alone: after the first step of a
    run (which waits for compilation) and after a validation (not training time)."""
    self._examples, self._start = 0, time.perf_counter()

  def add(self, sums: dict, examples: int) -> None:
    """Records one step's metric sums (device values) and its global example count."""
    # One compiled addition of the whole dict: a dispatch per step, not per metric.
    self._sums = sums if self._sums is None else _add_sums_on_device(self._sums, sums)
    self._examples += examples
    if self._track_finite:
      self._finite.append(sums["finite"])

  def first_nonfinite(self, last_step: int) -> int | None:
    """The first step of the window whose loss was not finite (None: all finite).

    Reads and clears the window's flags; `last_step` is the window's last step.
    """
    flags = [bool(flag) for flag in jax.device_get(self._finite)]
    self._finite = []
    first_step = last_step - len(flags) + 1
    return next((first_step + offset for offset, finite in enumerate(flags) if not finite), None)

  def metrics(self) -> dict:
    """Averages of the window's steps, grad_norm, examples/s and how many steps were skipped."""
    host = jax.device_get(self._sums)
    result = metrics_lib.averages(host)
    result["grad_norm"] = float(host["grad_norm"] / host["steps"])
    result["examples_per_second"] = self._examples / max(time.perf_counter() - self._start, 1e-9)
    result["steps_skipped_in_window"] = int(host["steps"] - host["finite"])
    return result


def write_scalars(writer, step: int, prefix: str, values: dict) -> None:
  """`prefix/name` scalars at `step` (nothing when `writer` is None)."""
  if writer is None:
    return
  for name, value in values.items():
    writer.add_scalar(f"{prefix}/{name}", value, step)
  writer.flush()


def write_hparams(writer, config: ml_collections.ConfigDict, num_params: int) -> None:
  """Hyperparameters into the run's own event file, so runs compare side by side."""
  from tensorboardX.summary import hparams  # pylint: disable=g-import-not-at-top
  flat = {}
  for key, value in _flatten(config.to_dict()).items():
    flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
  flat["num_params"] = num_params
  metric_names = ["val/loss", "val/sequence_accuracy", "val/exact_match", "train/loss"]
  for summary in hparams(flat, {name: 0.0 for name in metric_names}):
    writer.file_writer.add_summary(summary)
  writer.add_text("config", "```\n" + str(config) + "\n```", 0)


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat
