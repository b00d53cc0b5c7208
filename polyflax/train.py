"""Training: the loop, from a config and a workdir to trained checkpoints.

`train_and_evaluate` reads top-down: check the config and the workdir,
build the data (`input_pipeline.training_data`) and the experiment
(`experiment.build`: model, optimizer, compiled steps), resume from the
latest checkpoint (`resume`), compile every batch shape (saying so first;
the compiled programs are kept on disk, see `compile_cache`), then step
with at most two steps in flight (`progress.InFlight`), logging each window
(`run_log.LogWindow`), validating (`validation.Validator`) and checkpointing
every `val_check_interval` of an epoch (each validation is kept in the
run record's history with the training seconds so far,
`progress.TrainingClock`), until the last step or a stop
signal (`signals.GracefulStop`, answered at once, stopping within two
steps). On a CPU a long run says early how long it will take
(`progress.TimeEstimate`). `fast_dev_run` is its own short path. The steps
themselves are in `steps.py`.
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
from polyflax import run_log
from polyflax import run_record
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
  """Where a run continues: its state, the checkpoint's step (None: fresh), skip count,
  training seconds and validation history so far."""
  state: steps.TrainState
  step: int | None
  skipped_steps: int
  train_seconds: float = 0.0
  validation_history: list = dataclasses.field(default_factory=list)


def resume(store: checkpoints.CheckpointStore, state: steps.TrainState,
           train_stream: training_streams.TrainingStream, fingerprint: dict,
           workdir: str, vocab: vocab_lib.Vocab) -> Resumed:
  """Restores the latest checkpoint of `store` into `state`'s shardings, and the data position.

  The run record is read first, so a checkpoint of another model or data
  stops with what differs before its arrays are read; so does one whose
  moving average of the parameters (`ema_decay`) is on where the config's is
  off, or the other way round.
  """
  latest = store.latest_step()
  if latest is None:
    return Resumed(state=state, step=None, skipped_steps=0)
  record = store.restore_record(latest)
  model_setup.check_fingerprint(record.model, fingerprint, store.path(latest))
  # The vocabulary the run was trained with must be this one.
  saved_vocab = workdir_lib.load_vocab(workdir)
  if saved_vocab.digit_order != vocab.digit_order:
    raise checkpoints.CheckpointError(
        f"{workdir} was trained with digit_order={saved_vocab.digit_order!r}, the config "
        f"says {vocab.digit_order!r}: resume with the run's setting, or use another --workdir")
  saved_ema = checkpoints.EMA_PARAMS_FIELD in store.saved_fields(latest)
  if saved_ema != (state.ema_params is not None):
    raise checkpoints.CheckpointError(
        f"checkpoint {store.path(latest)} was trained "
        f"{'with' if saved_ema else 'without'} a moving average of the parameters: resume "
        f"with ema_decay {'> 0' if saved_ema else '= 0'} as it was trained, or use another "
        "--workdir")
  try:
    train_stream.set_state(record.iterator)
  except (KeyError, ValueError) as error:
    raise checkpoints.CheckpointError(
        f"checkpoint {store.path(latest)} does not fit this training data and config "
        f"({error}); use the data and seed it was trained with, or another --workdir"
    ) from error
  restored = store.restore(latest, checkpoints.abstract_like(steps.checkpoint_tree(state)))
  return Resumed(state=steps.state_from_checkpoint_tree(restored), step=latest,
                 skipped_steps=record.skipped_steps, train_seconds=record.train_seconds,
                 validation_history=list(record.validation_history))


def save_checkpoint(store: checkpoints.CheckpointStore, step: int, state: steps.TrainState, *,
                    fingerprint: dict, train_stream: training_streams.TrainingStream,
                    skipped_steps: int, train_seconds: float, validation_history: list,
                    validation_metrics: dict | None = None) -> None:
  """Starts saving `state` at `step` with its run record (see `run_record.RunRecord`)."""
  store.save(step, steps.checkpoint_tree(state), run_record.RunRecord(
      model=fingerprint, iterator=train_stream.get_state(), skipped_steps=skipped_steps,
      command=run_record.command_line(), versions=run_record.versions(),
      devices=run_record.devices(), saved_at=run_record.now(), validation=validation_metrics,
      train_seconds=train_seconds, validation_history=list(validation_history)))


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
  state, sums = experiment.train_step(
      state, steps.step_batch(next(iter(data.train)), experiment.mesh))
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
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

  # --- Checks, before anything slow. -------------------------------------------
  mesh = sharding.make_mesh()
  config_checks.check_config(config, num_devices=sharding.global_batch_multiple(mesh))
  is_main = jax.process_index() == 0
  if workdir_lib.is_exported(workdir):
    raise checkpoints.CheckpointError(
        f"{workdir} is an exported model (parameters only, no optimizer state to resume "
        "from): train in another --workdir")
  if not config.fast_dev_run:
    # A run whose checkpoints cannot be written stops now.
    checkpoints.ensure_writable_directory(workdir)

  # --- Text -> tokens -> batches; the model, optimizer and steps. ---------------
  vocab = vocab_lib.Vocab.default(config.digit_order)
  batching = input_pipeline.batching(config, mesh)
  data = load_training_data(config, vocab, batching)
  steps_per_epoch = data.train.steps_per_epoch
  total_steps = (1 if config.fast_dev_run
                 else config.max_steps or config.max_epochs * steps_per_epoch)
  val_every = max(1, int(round(config.val_check_interval * steps_per_epoch)))
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
  state, skipped_steps = resumed.state, resumed.skipped_steps
  history = resumed.validation_history  # grows by one entry at each validation
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
  progress = tqdm(total=total_steps, initial=step, desc="train", unit="step",
                  disable=not is_main, dynamic_ncols=True)

  def say(line: str) -> None:
    """One line on stdout from process 0, printed above the bar at once."""
    if is_main:  # tqdm.write prints even when the bar is disabled
      progress.write(line)
      sys.stdout.flush()

  window = run_log.LogWindow(track_finite=not config.skip_nonfinite_steps)
  in_flight = progress_lib.InFlight(progress, first_step=step)
  estimate = progress_lib.TimeEstimate(total_steps, backend=jax.default_backend())
  val_metrics = {}
  batches = iter(data.train)
  # Training seconds, validation left out, going on from the checkpoint's.
  clock = progress_lib.TrainingClock(resumed.train_seconds)
  clock.start()
  first_step = step
  with signals.GracefulStop(announce=say) as stop:
    stop.boundary = step + 1
    try:
      while step < total_steps:
        # `step` steps are handed over. A signal that came before this line
        # promised to stop after step `step`; one from here on, after the next.
        stop.boundary = step + 1
        stop.announce_pending()
        if step > first_step and (stop.should_stop(step) or
                                  (stop_at_step is not None and step >= stop_at_step)):
          raise_if_nonfinite(window, step, store)
          save_checkpoint(store, step, state, fingerprint=experiment.fingerprint,
                          train_stream=data.train, skipped_steps=skipped_steps,
                          train_seconds=clock.pause(), validation_history=history)
          store.wait()
          in_flight.wait()
          reason = stop.reason or f"stop_at_step={stop_at_step}"
          say(f"{reason}: saved a checkpoint at step {step} in {store.directory}; "
              "run the same command again to resume from it")
          if stop.reason is not None:
            raise signals.TrainingInterrupted(reason, stop.exit_code)
          break
        in_flight.make_room()  # for step N: step N-2 is done
        if step > first_step + 1:
          note = estimate.observe(in_flight.finished)
          if note:
            say(note)
        local_batch = next(batches)
        state, sums = experiment.train_step(state, steps.step_batch(local_batch, mesh))
        step += 1
        in_flight.add(sums)
        window.add(sums, int(local_batch["example_mask"].sum()) * jax.process_count())
        if step == first_step + 1:
          # The clocks start after the first step, which waited for compilation.
          in_flight.wait()
          estimate.observe(in_flight.finished)
          window.restart_clock()
        at_validation = step % val_every == 0 or step == total_steps
        if step % config.log_every_steps == 0 or at_validation:
          raise_if_nonfinite(window, step, store)
          train_metrics = window.metrics()
          in_flight.wait()  # done already: the window's metrics waited for its steps
          skipped_steps += train_metrics.pop("steps_skipped_in_window")
          train_metrics["learning_rate"] = float(experiment.schedule(step - 1))
          train_metrics["skipped_steps"] = skipped_steps
          run_log.write_scalars(writer, step, "train", train_metrics)
          progress.set_postfix(loss=f"{train_metrics['loss']:.4f}",
                               lr=f"{train_metrics['learning_rate']:.2e}",
                               ex_s=f"{train_metrics['examples_per_second']:,.0f}")
          window.restart()
        if at_validation:
          # The steps are done (the log above waited for them): validation
          # and its save are not training time.
          train_seconds = clock.pause()
          # The EMA when the run keeps one: what is validated is what the
          # best checkpoint is chosen by and what is exported.
          val_metrics = validator(state.model_params)
          history.append(run_record.history_entry(step, train_seconds, val_metrics))
          run_log.write_scalars(writer, step, "val", val_metrics)
          run_log.write_scalars(writer, step, "val", {"train_seconds": train_seconds})
          say(f"step {step} (epoch {step / steps_per_epoch:.2f}): " + ", ".join(
              f"val {name} {value:.4f}" for name, value in val_metrics.items()))
          save_checkpoint(store, step, state, fingerprint=experiment.fingerprint,
                          train_stream=data.train, skipped_steps=skipped_steps,
                          train_seconds=train_seconds, validation_history=history,
                          validation_metrics=val_metrics)
          window.restart_clock()  # validation time is not training time
          clock.start()
        if jax.process_count() > 1 and step % config.log_every_steps == 0:
          # A signal reaches each process on its own: stop together, at the
          # first log step where any process has one.
          stop.agree(step)
    finally:
      progress.close()
      store.close()
      data.train.close()
      if writer is not None:
        writer.close()
  return val_metrics
