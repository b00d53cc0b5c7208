"""Orbax checkpoints of the training state: the latest few and the best.

Each checkpoint step holds two items:
  * `state`: the train state pytree (step, parameters, optimizer state, RNG,
    and `ema_params`, the parameters' moving average, when the run keeps
    one), written with `StandardSave` and read back with `StandardRestore`
    onto the shardings of an abstract target, or, for inference, one field of
    parameters alone (`CheckpointStore.restore_params`, an Orbax partial
    restore): the moving average when saved, since that is then the model
    (`model_params_field`);
  * `extra`: the run record as JSON (`run_record.RunRecord`: data-iterator
    position, model fingerprint, validation figures, the command and
    versions that trained it), written by `save` and read by
    `restore_record`, the one place each.
Orbax adds a third, `metrics`: the step's validation loss (none for a save
without validation), which ranks the steps for `best_step` and retention.

An exported model holds its parameters alone, written by `save_params` and
read by `restore_params`.
Orbax writes a step into a temporary folder (`<step>.orbax-checkpoint-tmp`)
and renames it when complete, so a save cut short (a killed process, a full
disk) never replaces the last complete checkpoint; a writable store removes
such leftover folders when it opens. Saves run asynchronously; `wait()` blocks
until they are on disk. Every failure to write or read a checkpoint is raised
as a one-line `CheckpointError` naming the step folder (the class lives in
checkpoint_error.py, for code that raises it without loading Orbax).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath  # Orbax's path type (etils is a dependency of Orbax)
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from polyflax.checkpoint_error import CheckpointError, one_line
from polyflax.run_record import RunRecord

BEST_METRIC = "val_loss"  # lower is better
# The two items of a training checkpoint's step folder.
STATE_ITEM = "state"  # the TrainState
RECORD_ITEM = "extra"  # the RunRecord, as JSON
# The state's fields holding parameters: those trained, and their moving
# average, saved only by a run with ema_decay > 0 (the model such a run validates and exports).
PARAMS_FIELD = "params"
EMA_PARAMS_FIELD = "ema_params"
# Largest data file Orbax writes for a parameters-only folder (it splits
# bigger trees over several files); shipped models keep every file under 15 MiB.
PARAMS_FILE_BYTES = 8 << 20


class _AbandonedReadsFilter(logging.Filter):
  """Drops asyncio's reports of the read tasks a failed restore abandoned.

  asyncio writes the message on the report's first line and the task on the
  next ones ('future: <Task finished ...>'), so the first line is compared.
  """

  def filter(self, record):
    return record.getMessage().split("\n", 1)[0] != "Task exception was never retrieved"


def _quiet_abandoned_reads() -> None:
  """Keeps the reads a failed restore abandons from printing tracebacks.

  When one array of a checkpoint cannot be read, Orbax gives up the restore
  and closes its event loop while TensorStore still has other reads in
  flight. As these finish, Python prints an 'Event loop is closed'
  traceback for each (an unraisable exception) and asyncio logs 'Task
  exception was never retrieved' with the same error as the one the
  restore raised. Those two reports are dropped, from the first restore on;
  every other unraisable exception and asyncio log record is kept.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_polyflax_quiet", False):
    return

  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"):
      return
    previous(unraisable)

  hook._polyflax_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_AbandonedReadsFilter())


def ensure_writable_directory(directory: str) -> None:
  """Creates `directory` if needed and checks that a file can be written in it.

  Raises:
    CheckpointError: naming the directory and the reason, before any work is
      done that could not be saved there.
  """
  try:
    os.makedirs(directory, exist_ok=True)
    handle, probe = tempfile.mkstemp(dir=directory, prefix=".write-check-")
    os.close(handle)
    os.remove(probe)
  except OSError as error:
    raise CheckpointError(f"cannot write to {os.path.abspath(directory)}: {one_line(error)}; "
                          "choose another --workdir, or make it writable") from error


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of a pytree of arrays (the restore target)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _restore_args(abstract: Any) -> Any:
  """Orbax restore arguments that place each array on its target's sharding.

  Every leaf of `abstract` must carry a sharding: restoring onto the target
  layout, not the one saved, is what lets a run saved on one GPU resume or
  decode on several (and Orbax warns when it is missing).
  """
  missing = [leaf for leaf in jax.tree.leaves(abstract) if getattr(leaf, "sharding", None) is None]
  if missing:
    raise ValueError(f"{len(missing)} restore targets carry no sharding")
  return ocp.checkpoint_utils.construct_restore_args(abstract)


# Orbax's file saying a save finished, with the absolute path it wrote to.
COMMIT_MARKER_FILE = "commit_success.txt"


def save_params(directory: str, params: Any) -> None:
  """Writes a parameters-only checkpoint (an exported model) into `directory`.

  `directory` must not exist yet; the write is complete when this returns.
  Data files are split at `PARAMS_FILE_BYTES`. Orbax's commit marker, which
  names the absolute path written to, is removed: the folder is meant to be
  copied and shipped, and on a local filesystem Orbax's rename already marks
  a finished write (restoring does not read the marker).
  """
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      checkpointer.save(os.path.abspath(directory), args=ocp.args.PyTreeSave(
          params, ocdbt_target_data_file_size=PARAMS_FILE_BYTES))
  except Exception as error:  # pylint: disable=broad-except
    raise CheckpointError(f"could not write parameters to {directory}: {one_line(error)}"
                          ) from error
  marker = os.path.join(directory, COMMIT_MARKER_FILE)
  if os.path.exists(marker):
    os.remove(marker)


def _read_params(directory: str, abstract_params: Any, field: str | None = None) -> Any:
  """Parameters from an Orbax pytree folder, onto the shapes and shardings of `abstract_params`.

  Without `field` the folder holds the parameters alone (`save_params`);
  with it, only that field of the folder's tree is read (a saved state's
  `<step>/state`): an Orbax partial restore, which leaves the rest on disk.
  Orbax's errors are raised as they are.
  """
  item, restore_args = abstract_params, _restore_args(abstract_params)
  if field is not None:
    item, restore_args = {field: item}, {field: restore_args}
  _quiet_abandoned_reads()  # before: abandoned reads finish while Orbax unwinds
  with ocp.PyTreeCheckpointer() as checkpointer:
    restored = checkpointer.restore(os.path.abspath(directory), args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=field is not None))
  return restored if field is None else restored[field]


def restore_params(directory: str, abstract_params: Any) -> Any:
  """Reads a `save_params` folder onto the shapes and shardings of `abstract_params`."""
  try:
    return _read_params(directory, abstract_params)
  except Exception as error:  # Orbax raises many types; name the folder and the cause.
    raise CheckpointError(f"cannot restore the parameters in {directory} (corrupted, truncated "
                          f"or written for another model?): {one_line(error)}") from error


def _validation_loss(metrics: Mapping[str, float]) -> float:
  """What ranks a step's saved metrics: its validation loss (+inf for a save without one)."""
  return float(metrics.get(BEST_METRIC, math.inf))


class CheckpointStore:
  """Keeps the latest `keep_latest` checkpoints and the one best by validation loss."""

  def __init__(self, directory: str, *, keep_latest: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    policy = preservation.AnyPreservationPolicy([
        preservation.LatestN(n=keep_latest),
        preservation.BestN(get_metric_fn=_validation_loss, reverse=True, n=1,
                           keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        # Orbax writes each step's metrics to disk only when `best_fn` is set.
        # Without them a store opened later (evaluate, export, a resumed run)
        # would see no validation loss: best_step() would be the latest step,
        # and the retention policy would delete the best one.
        best_fn=_validation_loss,
        best_mode="min",
        # Saves run while training goes on; `wait` blocks until one is on disk.
        enable_async_checkpointing=True,
        create=not read_only,
        read_only=read_only,
        # A read-only manager saves nothing (Orbax would set this itself, with a warning).
        save_interval_steps=0 if read_only else 1,
        # Folders of saves cut short (a killed run) are removed on opening.
        cleanup_tmp_directories=not read_only,
    )
    # Orbax warns that a read-only folder is read-only; that is the point here.
    verbosity = absl_logging.get_verbosity()
    if read_only:
      absl_logging.set_verbosity(min(verbosity, absl_logging.ERROR))  # lower shows less
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_names=(STATE_ITEM, RECORD_ITEM))
    finally:
      absl_logging.set_verbosity(verbosity)
    self._saving = None  # the step of the save in flight, if any

  def path(self, step: int) -> str:
    """The folder of step `step`."""
    return os.path.join(self.directory, str(step))

  def _complete_steps_on_disk(self) -> list[int]:
    try:
      return sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())
    except OSError:
      return []

  def _save_failed(self, step: int | None, error: BaseException) -> CheckpointError:
    kept = self._complete_steps_on_disk()
    last = (f"the last complete checkpoint, {self.path(kept[-1])}, is kept and restorable"
            if kept else "there is no earlier complete checkpoint")
    where = self.path(step) if step is not None else f"in {self.directory}"
    return CheckpointError(f"could not save checkpoint {where}: {one_line(error)}; "
                           f"{last}. Fix the cause (e.g. free disk space) and run the same "
                           "command again to resume")

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

  def save(self, step: int, state: Any, record: RunRecord) -> bool:
    """Starts saving `state` and `record` at `step`; returns whether a save started.

    A record with validation figures ranks the step by its validation loss
    (`best_step`).
    """
    self.wait()  # surfaces a failure of the previous save under its own step
    if step in self._manager.all_steps():
      return False
    metrics = None if record.validation is None else {BEST_METRIC: record.validation["loss"]}
    args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                 RECORD_ITEM: ocp.args.JsonSave(record.to_json())})
    self._saving = step
    try:
      # A save without validation (a stop signal) records no loss, and so
      # never counts as the best.
      return self._manager.save(step, args=args, metrics=dict(metrics or {}), force=True)
    except Exception as error:  # pylint: disable=broad-except
      self._saving = None
      raise self._save_failed(step, error) from error

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Reads the state of step `step` onto the shapes and shardings of `abstract_state`."""
    _quiet_abandoned_reads()  # before: abandoned reads finish while Orbax unwinds
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          **{STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))
    except Exception as error:  # Orbax raises many types; name the file and the cause.
      raise self._unrestorable(step, error) from error
    return restored[STATE_ITEM]

  def _unrestorable(self, step: int, error: BaseException) -> CheckpointError:
    """One line naming step `step`'s checkpoint, the cause, and the other steps there."""
    path = os.path.join(self.directory, str(step))
    others = [other for other in self.all_steps() if other != step]
    hint = (f"; other checkpoints here: steps {others} (move {path} away to use the "
            "latest of them)" if others else "")
    return CheckpointError(f"cannot restore checkpoint {path} (corrupted, truncated or "
                           f"written for another model?): {one_line(error)}{hint}")

  def saved_fields(self, step: int) -> set[str]:
    """The names of the fields of step `step`'s saved state (from its metadata, no array read).

    The state folder is one item of the step, not a checkpoint of its own: it
    is read with the item's handler, since a Checkpointer would look there for
    the step's metadata file (which lies in the step folder) and warn that it
    is missing, on every sound checkpoint.
    """
    path = os.path.join(self.directory, str(step), STATE_ITEM)
    _quiet_abandoned_reads()  # as in `restore`: a failed read's threads finish while it unwinds
    handler = ocp.StandardCheckpointHandler()
    try:
      metadata = handler.metadata(epath.Path(path))
      return set(getattr(metadata, "tree", metadata))
    except Exception as error:  # pylint: disable=broad-except
      raise self._unrestorable(step, error) from error
    finally:
      handler.close()  # its threads would otherwise print at exit

  def model_params_field(self, step: int) -> str:
    """The field of step `step`'s state that is the model: the moving average when saved."""
    return EMA_PARAMS_FIELD if EMA_PARAMS_FIELD in self.saved_fields(step) else PARAMS_FIELD

  def restore_params(self, step: int, abstract_params: Any, field: str = PARAMS_FIELD) -> Any:
    """Only the parameters in `field` of step `step`'s state, onto `abstract_params`' shardings.

    The optimizer state, the step, the RNG and the other field of parameters
    stay on disk, so inference never builds or reads them.
    """
    try:
      return _read_params(os.path.join(self.path(step), STATE_ITEM), abstract_params, field)
    except Exception as error:  # Orbax raises many types; name the file and the cause.
      raise CheckpointError(f"cannot restore the parameters of checkpoint {self.path(step)} "
                            "(corrupted, truncated or written for another model?): "
                            f"{one_line(error)}") from error

  def restore_record(self, step: int) -> RunRecord:
    """Only the run record of a step: read first, before any array."""
    path = os.path.join(self.directory, str(step), RECORD_ITEM)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{RECORD_ITEM: ocp.args.JsonRestore()}))
      saved = restored[RECORD_ITEM]
      if not isinstance(saved, Mapping):
        raise ValueError(f"expected a JSON object, found {type(saved).__name__}")
    except Exception as error:  # pylint: disable=broad-except
      raise CheckpointError(f"cannot read {path} (corrupted or truncated?): "
                            f"{one_line(error)}") from error
    try:
      return RunRecord.from_json(saved)
    except ValueError as error:
      raise CheckpointError(f"checkpoint record {path}: {error}") from error

  def wait(self) -> None:
    """Blocks until the save in flight is on disk; CheckpointError if it failed."""
    step, self._saving = self._saving, None
    try:
      self._manager.wait_until_finished()
    except Exception as error:  # pylint: disable=broad-except
      raise self._save_failed(step, error) from error

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()
