"""Orbax checkpoints of the training state: the latest few and the best.

Each checkpoint step holds two items:
  * `state`: the train state pytree (step, parameters, optimizer state, RNG),
    written with `StandardSave` and read back with `StandardRestore` onto the
    shardings of an abstract target;
  * `extra`: JSON (data-iterator position, model fingerprint, ...).
Orbax writes a step into a temporary folder and renames it when complete, so
a save cut short never replaces the last complete checkpoint. Saves run
asynchronously; `wait()` blocks until they are on disk.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

BEST_METRIC = "val_loss"  # lower is better


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used, with the path and what is wrong."""


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of a pytree of arrays (the restore target)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class CheckpointStore:
  """Keeps the latest `keep_latest` checkpoints and the one best by validation loss."""

  def __init__(self, directory: str, *, keep_latest: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    policy = preservation.AnyPreservationPolicy([
        preservation.LatestN(n=keep_latest),
        preservation.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                           reverse=True, n=1, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        enable_async_checkpointing=async_save,
        create=not read_only,
        read_only=read_only,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "extra"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the lowest validation loss; the latest one if none has metrics."""
    scored = []
    for step in self.all_steps():
      metrics = self._manager.metrics(step)
      if metrics and BEST_METRIC in metrics:
        scored.append((float(metrics[BEST_METRIC]), step))
    if scored:
      return min(scored)[1]
    return self.latest_step()

  def save(self, step: int, state: Any, extra: Mapping[str, Any],
           metrics: Mapping[str, float] | None = None) -> bool:
    """Starts saving `state` and `extra` at `step`; returns whether a save started."""
    if step in self._manager.all_steps():
      return False
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              extra=ocp.args.JsonSave(dict(extra)))
    return self._manager.save(step, args=args, metrics=dict(metrics) if metrics else None,
                              force=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Reads step `step` onto the shapes and shardings of `abstract_state`."""
    path = os.path.join(self.directory, str(step))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()))
    except Exception as error:  # Orbax raises many types; name the file and the cause.
      raise CheckpointError(f"cannot restore checkpoint {path}: {error}") from error
    return restored["state"], dict(restored["extra"])

  def restore_extra(self, step: int) -> dict:
    """Only the JSON item of a step."""
    restored = self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
    return dict(restored["extra"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
