"""Training: the loop, from a config and a workdir to trained checkpoints.

`train_and_evaluate` reads top-down: check the config and the workdir, hold
the workdir (`run_lock`: one training run per workdir), build the data
(`input_pipeline.training_data`) and the experiment (`experiment.build`:
model, optimizer, compiled steps), resume from the latest checkpoint
(`resume`), compile every batch shape (saying so first; the compiled
programs are kept on disk, see `compile_cache`), then step with at most two
steps in flight, logging each window, validating (`validation.Validator`)
and checkpointing as `validation.ValidationSchedule` says (every
`val_check_interval` of an epoch; early in a run, every
`val_early_every_examples` training examples), until the last step or a stop
signal (`signals.GracefulStop`, answered at once, stopping within two
steps), and end with what the run reached and what to run next
(`run_summary`). Where the run stands (its step, the counters each
checkpoint's run record keeps, training examples among them, the clocks:
steps in flight, training seconds, examples/s, and on a CPU how long the
run will take) is one `progress.RunProgress`; every save goes through
`checkpoint(reason)`.
`fast_dev_run` is its own short path. The steps themselves are in
`steps.py`.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import ml_collections

from polyflax import checkpoints
from polyflax import compile_cache
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import distributed
from polyflax import experiment as experiment_lib
from polyflax import bucketing
from polyflax import input_pipeline
from polyflax import metrics as metrics_lib
from polyflax import model_setup
from polyflax import progress as progress_lib
from polyflax import run_lock
from polyflax import run_log
from polyflax import run_record
from polyflax import run_summary
from polyflax import sharding
from polyflax import signals
from polyflax import steps
from polyflax import training_streams
from polyflax import validation
from polyflax import vocab as vocab_lib
from polyflax import workdir as workdir_lib


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------
# Data.


def prepare_splits(config: ml_collections.ConfigDict) -> dict:
  """The run's train/val/test split paths, made first by process 0 when missing."""
  return distributed.process_zero_first(
      lambda: data_lib.ensure_splits(config.data_dir, config.data_seed,
                                     generated_size=config.generated_size,
                                     announce=jax.process_index() == 0),
      "data splits prepared")


def load_training_data(config: ml_collections.ConfigDict, vocab: vocab_lib.Vocab,
                       batching: bucketing.Batching) -> input_pipeline.TrainingData:
  """The run's training stream and validation batches; a data too small to batch is a ConfigError."""
  paths = prepare_splits(config)
  try:
    return input_pipeline.training_data(config, paths, vocab, batching)
  except ValueError as error:  # e.g. fewer examples than one batch
    source = "generated examples" if config.train_data == "generated" else paths["train"]
    raise config_checks.ConfigError(f"{source}: {error}") from error


# ---------------------------------------------------------------------------
# Checkpoints of the loop.


@dataclasses.dataclass
class Resumed:
  """Where a run continues: its state, the checkpoint's step and run record (None: fresh)."""
  state: steps.TrainState
  step: int | None
  record: run_record.RunRecord | None


def resume(store: checkpoints.CheckpointStore, state: steps.TrainState,
           train_stream: training_streams.TrainingStream, fingerprint: dict,
           workdir: str, vocab: vocab_lib.Vocab) -> Resumed:
  """Restores the latest checkpoint of `store` into `state`'s shardings, and the data position.

  The run record is read first, so a checkpoint of another model or data
  stops with what differs before its arrays are read; so does one whose
  moving average of the parameters (`ema_decay`) or partial-products head
  (`partial_products_weight`) is on where the config's is off, or the other
  way round.
  """
  latest = store.latest_step()
  if latest is None:
    return Resumed(state=state, step=None, record=None)
  record = store.restore_record(latest)
  model_setup.check_fingerprint(record.model, fingerprint, store.path(latest))
  # The vocabulary the run was trained with must be this one.
  saved_vocab = workdir_lib.load_vocab(workdir)
  if saved_vocab.digit_order != vocab.digit_order:
    raise checkpoints.CheckpointError(
        f"{workdir} was trained with digit_order={saved_vocab.digit_order!r}, the config "
        f"says {vocab.digit_order!r}: resume with the run's setting, or use another --workdir")
  # The optional parts of the state must be those the run was trained with.
  saved_fields = store.saved_fields(latest)
  for field, held, part, setting in (
      (checkpoints.EMA_PARAMS_FIELD, state.ema_params, "a moving average of the parameters",
       "ema_decay"),
      (steps.HEAD_PARAMS_FIELD, state.head_params, "the partial-products head",
       "partial_products_weight")):
    saved = field in saved_fields
    if saved != (held is not None):
      raise checkpoints.CheckpointError(
          f"checkpoint {store.path(latest)} was trained {'with' if saved else 'without'} "
          f"{part}: resume with {setting} {'> 0' if saved else '= 0'} as it was trained, "
          "or use another --workdir")
  try:
    train_stream.set_state(record.iterator)
  except (KeyError, ValueError) as error:
    raise checkpoints.CheckpointError(
        f"checkpoint {store.path(latest)} does not fit this training data and config "
        f"({error}); use the data and seed it was trained with, or another --workdir"
    ) from error
  restored = store.restore(latest, checkpoints.abstract_like(steps.checkpoint_tree(state)))
  return Resumed(state=steps.state_from_checkpoint_tree(restored), step=latest, record=record)


def save_checkpoint(store: checkpoints.CheckpointStore, state: steps.TrainState,
                    run: progress_lib.RunProgress, *, fingerprint: dict,
                    train_stream: training_streams.TrainingStream) -> None:
  """Starts saving `state` at `run.step` with its run record (see `run_record.RunRecord`)."""
  store.save(run.step, steps.checkpoint_tree(state), run_record.RunRecord(
      model=fingerprint, iterator=train_stream.get_state(), command=run_record.command_line(),
      versions=run_record.versions(), devices=run_record.devices(), saved_at=run_record.now(),
      **run.record_fields()))


def raise_if_nonfinite(window: run_log.LogWindow, step: int,
                       store: checkpoints.CheckpointStore) -> None:
  """Stops the run, without saving, if a step of the window had a non-finite loss."""
  bad_step = window.first_nonfinite(step)
  if bad_step is None:
    return
  store.wait()
  last = store.latest_step()
  kept = (f"the last good checkpoint, {store.path(last)}, is kept" if last is not None
          else "no checkpoint had been saved yet")
  raise NonFiniteLossError(
      f"the training loss was not finite at step {bad_step}; stopped without saving "
      f"({kept}). Lower learning_rate, or set --config.skip_nonfinite_steps=True to skip "
      "such steps")


# ---------------------------------------------------------------------------
# The short path.


def fast_dev_run(experiment: experiment_lib.Experiment, state: steps.TrainState,
                 data: input_pipeline.TrainingData, batching: bucketing.Batching) -> dict:
  """One training step and one validation batch; nothing written. Returns the val metrics."""
  multiple = sharding.global_batch_multiple(experiment.mesh)
  state, sums = experiment.train_step(state, experiment.train_batch(next(iter(data.train))))
  train_metrics = metrics_lib.averages(sums)
  val_metrics = validation.Validator(experiment, data, batching, max_batches=1,
                                     max_decoded=multiple)(state.model_params)
  if jax.process_index() == 0:
    print(f"fast_dev_run: train loss {train_metrics['loss']:.4f}, "
          f"val loss {val_metrics['loss']:.4f}; nothing written", flush=True)
  return val_metrics


# ---------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at_step: int | None = None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  `stop_at_step` stops early, as an interruption would, after saving a
  checkpoint at that step. Returns the last validation metrics.

  Raises:
    run_lock.WorkdirInUse: at once, when another training run holds `workdir`.
  """
  # --- Checks, before anything slow. -------------------------------------------
  mesh = sharding.make_mesh()
  config_checks.check_config(config, num_devices=sharding.global_batch_multiple(mesh))
  if workdir_lib.is_exported(workdir):
    raise checkpoints.CheckpointError(
        f"{workdir} is an exported model (parameters only, no optimizer state to resume "
        "from): train in another --workdir")
  if config.fast_dev_run:  # writes nothing, so holds nothing
    return _train(config, workdir, mesh, stop_at_step)
  # A run whose checkpoints cannot be written stops now.
  checkpoints.ensure_writable_directory(workdir)
  # One training run per workdir: a second one stops now, having made nothing.
  with run_lock.hold(workdir):
    return _train(config, workdir, mesh, stop_at_step)


# The reason of the save that follows each validation (`checkpoint` in `_train`).
VALIDATION = "validation"


def _train(config: ml_collections.ConfigDict, workdir: str, mesh,
           stop_at_step: int | None) -> dict:
  """`train_and_evaluate` once its checks are done and the workdir is held."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  is_main = jax.process_index() == 0

  # --- Text -> tokens -> batches; the model, optimizer and steps. ---------------
  vocab = vocab_lib.Vocab.default(config.digit_order)
  batching = input_pipeline.batching(config, mesh)
  data = load_training_data(config, vocab, batching)
  steps_per_epoch = data.train.steps_per_epoch
  total_steps = (1 if config.fast_dev_run
                 else config.max_steps or config.max_epochs * steps_per_epoch)
  validation_schedule = validation.ValidationSchedule.from_config(
      config, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  experiment, state = experiment_lib.build(config, total_steps, mesh=mesh)
  if is_main:
    fresh = " generated afresh each epoch" if config.train_data == "generated" else ""
    print(f"model: {experiment.num_params:,} parameters; "
          f"{data.train.num_examples:,} training examples{fresh}, "
          f"{steps_per_epoch} steps per epoch, {total_steps} steps; "
          f"devices: {jax.device_count()} x {jax.devices()[0].platform}", flush=True)
  if config.fast_dev_run:
    try:
      return fast_dev_run(experiment, state, data, batching)
    finally:
      data.train.close()
  validator = validation.Validator(experiment, data, batching)

  # --- Resume, run files, logs. ----------------------------------------------------
  store = checkpoints.CheckpointStore(workdir_lib.checkpoints_dir(workdir),
                                      keep_latest=config.checkpoints_to_keep)
  resumed = resume(store, state, data.train, experiment.fingerprint, workdir,
                   experiment.vocab)
  state = resumed.state
  if is_main and resumed.step is not None:
    print(f"resuming from checkpoint at step {resumed.step}", flush=True)
  if is_main:
    workdir_lib.write_run_files(workdir, config, vocab)
  # After a kill, the steps logged past the checkpoint are run again: purge_step
  # tells TensorBoard to hide the earlier run's events from that step on.
  writer = None
  if is_main:
    writer = SummaryWriter(workdir, purge_step=None if resumed.step is None else resumed.step + 1)
    if resumed.step is None:
      run_log.write_hparams(writer, config, experiment.num_params)

  # --- Compile every step shape first, timed apart. -------------------------------------
  step = int(jax.device_get(state.step))
  if is_main:
    print(f"compiling the steps for {len(data.train.shapes)} training and "
          f"{len(data.val.layout.shapes)} validation batch shapes (compilation cache: "
          f"{compile_cache.location()})", flush=True)
  compile_start = time.perf_counter()
  num_train_shapes = experiment_lib.compile_train_step(experiment, state, data.train.shapes)
  num_val_shapes = validator.compile(state.model_params)
  compile_seconds = time.perf_counter() - compile_start
  run_log.write_scalars(writer, step, "train", {"compile_seconds": compile_seconds})
  if is_main:
    print(f"compiled {num_train_shapes} training and {num_val_shapes} validation batch shapes "
          f"in {compile_seconds:.1f} s", flush=True)

  # --- Steps. --------------------------------------------------------------------------
  # The bar counts finished steps (progress.InFlight), so its rate and ETA are the steps'.
  bar = tqdm(total=total_steps, initial=step, desc="train", unit="step",
             disable=not is_main, dynamic_ncols=True)

  def say(line: str) -> None:
    """One line on stdout from process 0, printed above the bar at once."""
    if is_main:  # tqdm.write prints even when the bar is disabled
      bar.write(line)
      sys.stdout.flush()

  # The step, the counters every checkpoint keeps, and the clocks (training
  # seconds going on from the checkpoint's, validation left out).
  run = progress_lib.RunProgress.from_record(
      resumed.record, step=step, total_steps=total_steps, bar=bar,
      backend=jax.default_backend(), track_finite=not config.skip_nonfinite_steps)
  batches = iter(data.train)

  def checkpoint(reason: str) -> None:
    """Saves the loop's current `state` at `run.step`, with its run record.

    After a validation (`VALIDATION`) the save runs on while training goes
    on. Any other `reason` is why the run stops: the save is waited for,
    and a line says where it is.
    """
    if reason != VALIDATION:
      raise_if_nonfinite(run.window, run.step, store)
      run.pause()
    save_checkpoint(store, state, run, fingerprint=experiment.fingerprint,
                    train_stream=data.train)
    if reason != VALIDATION:
      store.wait()
      run.in_flight.wait()
      say(f"{reason}: saved a checkpoint at step {run.step} in {store.directory}; "
          "run the same command again to resume from it")

  def summarize() -> None:
    """The run's closing lines (`run_summary`), below the finished bar, its saves on disk."""
    store.wait()
    bar.close()
    if is_main:
      for line in run_summary.closing_lines(
          workdir=workdir, checkpoints_dir=store.directory, step=run.step,
          total_steps=total_steps, steps_per_epoch=steps_per_epoch,
          history=run.validation_history, best_step=store.best_step(),
          completed=run.step >= total_steps, argv=sys.argv):
        say(line)

  with signals.GracefulStop(announce=say) as stop:
    stop.boundary = run.step + 1
    try:
      while run.step < total_steps:
        # `run.step` steps are handed over. A signal that came before this line
        # promised to stop after step `run.step`; one from here on, after the next.
        stop.boundary = run.step + 1
        stop.announce_pending()
        if run.step > run.first_step and (
            stop.should_stop(run.step) or (stop_at_step is not None
                                           and run.step >= stop_at_step)):
          checkpoint(stop.reason or f"stop_at_step={stop_at_step}")
          break
        note = run.before_step()
        if note:
          say(note)
        local_batch = next(batches)
        state, sums = experiment.train_step(state, experiment.train_batch(local_batch))
        examples_before = run.train_examples
        run.after_step(sums, progress_lib.batch_examples(local_batch, jax.process_count()))
        step = run.step
        at_validation = validation_schedule.due(step, examples_before, run.train_examples)
        if step % config.log_every_steps == 0 or at_validation:
          raise_if_nonfinite(run.window, step, store)
          train_metrics = run.window_metrics()
          train_metrics["learning_rate"] = float(experiment.schedule(step - 1))
          run_log.write_scalars(writer, step, "train", train_metrics)
          bar.set_postfix(loss=f"{train_metrics['loss']:.4f}",
                          lr=f"{train_metrics['learning_rate']:.2e}",
                          ex_s=f"{train_metrics['examples_per_second']:,.0f}")
        if at_validation:
          # The steps are done (the log above waited for them): validation
          # and its save are not training time.
          train_seconds = run.pause()
          # The EMA when the run keeps one: what is validated is what the
          # best checkpoint is chosen by and what is exported.
          val_metrics = validator(state.model_params)
          run.validated(val_metrics)
          run_log.write_scalars(writer, step, "val", val_metrics)
          run_log.write_scalars(writer, step, "val", {"train_seconds": train_seconds})
          if run.train_examples is not None:  # unknown in a run resumed from an older record
            run_log.write_scalars(writer, step, "val", {"train_examples": run.train_examples})
          say(f"step {step} (epoch {step / steps_per_epoch:.2f}): " + ", ".join(
              f"val {name} {value:.4f}" for name, value in val_metrics.items()))
          checkpoint(VALIDATION)
          run.resume()
        if jax.process_count() > 1 and step % config.log_every_steps == 0:
          # A signal reaches each process on its own: stop together, at the
          # first log step where any process has one.
          stop.agree(step)
      summarize()
      if run.step < total_steps and stop.reason is not None:  # stopped by the signal
        raise signals.TrainingInterrupted(stop.reason, stop.exit_code)
    finally:
      bar.close()
      store.close()
      data.train.close()
      if writer is not None:
        writer.close()
  return run.validation
