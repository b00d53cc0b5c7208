"""Training: jit-compiled, data-parallel steps over the split NNX model state, and the loop.

The model, optimizer and `TrainState` come from `experiment.py`. The train
and eval steps here are pure functions of that state, compiled with `jax.jit`
over the one-axis `data` mesh (batch sharded, state replicated, state
donated); dropout keys are `fold_in(rng, step)`.

`train_and_evaluate` reads top-down: prepare and load the data, build the
experiment, resume from the latest checkpoint (`resume`), then step,
logging each window (`LogWindow`), validating and checkpointing every
`val_check_interval` of an epoch, until the last step or a stop signal
(`GracefulStop`). `fast_dev_run` is its own short path.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import signal
import sys
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from polyflax import checkpoints
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import decode
from polyflax import distributed
from polyflax import experiment as experiment_lib
from polyflax import inference
from polyflax import input_pipeline
from polyflax import metrics as metrics_lib
from polyflax import models
from polyflax import sharding
from polyflax import vocab as vocab_lib
from polyflax.experiment import TrainState


# ---------------------------------------------------------------------------
# How training ends early.


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite."""


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


# ---------------------------------------------------------------------------
# Steps.

# The arrays of a batch that a step reads (the batch's `index` stays on the host).
STEP_INPUTS = ("inputs", "targets", "example_mask")


def step_batch(local_batch: dict, mesh) -> dict:
  """The global, sharded arrays a step reads, from this process's rows of a batch."""
  return sharding.put_batch({name: local_batch[name] for name in STEP_INPUTS}, mesh)



def train_step(state: TrainState, batch, *, graphdef, tx, label_smoothing: float,
               skip_nonfinite: bool = False):
  """One optimizer step on a global batch; returns the new state and metric sums."""
  dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    model = nnx.merge(graphdef, params)
    logits = model(batch["inputs"], batch["targets"], deterministic=False,
                   rngs=nnx.Rngs(dropout=dropout_key))
    return metrics_lib.cross_entropy_sums(logits, batch["targets"], batch["example_mask"],
                                          label_smoothing)

  (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(sums["loss_sum"]) & jnp.isfinite(grad_norm)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if skip_nonfinite:
    # A step with a non-finite loss leaves parameters and optimizer untouched.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    sums = {name: jnp.where(finite, value, 0.0) for name, value in sums.items()}
    grad_norm = jnp.where(finite, grad_norm, 0.0)
  sums = dict(sums, grad_norm=grad_norm, steps=jnp.float32(1), finite=finite.astype(jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums


def eval_step(params, batch, *, graphdef):
  """Teacher-forced metric sums of a batch (no label smoothing)."""
  model = nnx.merge(graphdef, params)
  logits = model(batch["inputs"], batch["targets"], deterministic=True)
  _, sums = metrics_lib.cross_entropy_sums(logits, batch["targets"], batch["example_mask"])
  return sums


@dataclasses.dataclass
class Experiment:
  """What a training run builds from a config, before the loop."""
  config: ml_collections.ConfigDict
  mesh: Any
  vocab: vocab_lib.Vocab
  model_cfg: models.ModelConfig
  graphdef: Any
  num_params: int
  schedule: Callable
  state: TrainState
  train_step: Callable
  eval_step: Callable


def build(config: ml_collections.ConfigDict, total_steps: int, mesh=None) -> Experiment:
  """Creates the mesh, model, optimizer, replicated state and compiled steps."""
  mesh = sharding.make_mesh() if mesh is None else mesh
  vocab = vocab_lib.Vocab.default()
  model_cfg = experiment_lib.model_config(config, vocab.size)
  graphdef, params = experiment_lib.create_model(model_cfg, config.seed)
  num_params = models.count_params(params)
  config_checks.check_param_count(num_params, config)
  schedule = experiment_lib.learning_rate_schedule(config, total_steps)
  tx = experiment_lib.make_optimizer(config, schedule)
  state = sharding.put_replicated(experiment_lib.init_state(params, tx, config.seed), mesh)
  state_sharding = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  jit_train = jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx,
                        label_smoothing=config.label_smoothing,
                        skip_nonfinite=config.skip_nonfinite_steps),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, state_sharding),
      donate_argnums=(0,))
  jit_eval = jax.jit(functools.partial(eval_step, graphdef=graphdef),
                     in_shardings=(state_sharding, batch_sharding),
                     out_shardings=state_sharding)
  return Experiment(config=config, mesh=mesh, vocab=vocab, model_cfg=model_cfg,
                    graphdef=graphdef, num_params=num_params, schedule=schedule, state=state,
                    train_step=jit_train, eval_step=jit_eval)


# ---------------------------------------------------------------------------
# Data.


def prepare_splits(config: ml_collections.ConfigDict) -> dict:
  """The run's train/val/test split paths, made first by process 0 when missing."""
  return distributed.process_zero_first(
      lambda: data_lib.ensure_splits(config.data_dir, config.data_seed,
                                     generated_size=config.generated_size,
                                     announce=jax.process_index() == 0),
      "data splits prepared")


@dataclasses.dataclass
class TrainingData:
  """The training batches and the validation split, encoded."""
  # A TrainIterator over the train split, or a GeneratedTrainIterator.
  train_iter: Any
  val_src: np.ndarray
  val_tgt: np.ndarray
  val_pairs: list[tuple[str, str]]


def load_training_data(config: ml_collections.ConfigDict, vocab: vocab_lib.Vocab,
                       mesh) -> TrainingData:
  """Text -> tokens -> batches: the run's training stream and validation split.

  `train_data="split"` reads the train split; `"generated"` generates fresh
  examples every epoch (as many as the split holds, unless
  `generated_examples_per_epoch` says otherwise). Validation is always the
  fixed validation split.
  """
  paths = prepare_splits(config)
  train_src, train_tgt, _ = input_pipeline.load_split(paths["train"], vocab, config.max_len,
                                                      skip_bad=config.skip_bad_lines)
  val_src, val_tgt, val_pairs = input_pipeline.load_split(paths["val"], vocab, config.max_len,
                                                          skip_bad=config.skip_bad_lines)
  batching = dict(batch_size=config.batch_size, seed=config.seed,
                  batch_multiple=sharding.global_batch_multiple(mesh),
                  process_index=jax.process_index(), process_count=jax.process_count(),
                  buckets=tuple(config.length_buckets), constant=config.constant_per_batch)
  try:
    if config.train_data == "generated":
      per_epoch = config.generated_examples_per_epoch or len(train_src)
      train_iter = input_pipeline.GeneratedTrainIterator(
          input_pipeline.generated_examples(vocab, config.max_len, config.data_seed, per_epoch),
          examples_per_epoch=per_epoch, **batching)
    else:
      train_iter = input_pipeline.TrainIterator(train_src, train_tgt, **batching)
  except ValueError as error:  # e.g. fewer examples than one batch
    source = "generated examples" if config.train_data == "generated" else paths["train"]
    raise config_checks.ConfigError(f"{source}: {error}") from error
  return TrainingData(train_iter=train_iter, val_src=val_src, val_tgt=val_tgt,
                      val_pairs=val_pairs)


def compile_train_step(experiment: Experiment, batch_shapes) -> int:
  """Compiles the train step for every (local batch size, length) the run will use.

  Each compile runs one step on a batch of masked zero rows and a throwaway
  copy of the state (the step donates its input), so neither the real state
  nor the data order changes. Returns the number of shapes.
  """
  batch_shapes = list(batch_shapes)
  for local_size, length in batch_shapes:
    scratch = jax.tree.map(lambda x: x.copy(), experiment.state)
    jax.block_until_ready(experiment.train_step(
        scratch, step_batch(zero_batch(local_size, length), experiment.mesh)))
  return len(batch_shapes)


def zero_batch(local_size: int, length: int) -> dict:
  """A batch of masked, all-padding rows: compiles a step without touching any example."""
  return {"inputs": np.zeros((local_size, length), np.int32),
          "targets": np.zeros((local_size, length), np.int32),
          "example_mask": np.zeros((local_size,), np.float32)}


# ---------------------------------------------------------------------------
# Validation.


def evaluate_metrics(experiment: Experiment, params, batches, limit_batches=None) -> dict:
  """Teacher-forced averages over evaluation batches (each example counted once)."""
  total = None
  for index, batch in enumerate(batches):
    if limit_batches is not None and index >= limit_batches:
      break
    total = metrics_lib.add_sums(total, experiment.eval_step(
        params, step_batch(batch, experiment.mesh)))
  return metrics_lib.averages(total) if total is not None else {}


class Validator:
  """Teacher-forced validation metrics, plus exact match by greedy decoding of a fixed sample."""

  def __init__(self, experiment: Experiment, data: TrainingData, *, max_batches=None,
               max_decoded=None):
    config = experiment.config
    self._experiment, self._data, self._max_batches = experiment, data, max_batches
    self._decoder = decode.Decoder(experiment.graphdef, None, experiment.vocab, experiment.mesh,
                                   max_len=config.max_len, buckets=tuple(config.length_buckets))
    self._num_decoded = min(config.val_exact_match_examples, len(data.val_pairs),
                            max_decoded if max_decoded is not None else len(data.val_pairs))

  def _batches(self) -> input_pipeline.EvalBatches:
    config, data = self._experiment.config, self._data
    return input_pipeline.eval_batches(
        data.val_src, data.val_tgt, batch_size=config.eval_batch_size,
        batch_multiple=sharding.global_batch_multiple(self._experiment.mesh),
        process_index=jax.process_index(), process_count=jax.process_count(),
        buckets=tuple(config.length_buckets))

  def compile(self, params) -> int:
    """Compiles the eval step and the decoder for every validation batch shape; returns how many."""
    batches = self._batches()
    shapes = [(local_size, length) for length, local_size, count in zip(
        batches.buckets, batches.local_batch_sizes, batches.bucket_counts) if count]
    for local_size, length in shapes:
      jax.block_until_ready(self._experiment.eval_step(
          params, step_batch(zero_batch(local_size, length), self._experiment.mesh)))
    if self._num_decoded:
      self._decoder.warm_up(self._data.val_src[:self._num_decoded],
                            batch_size=self._experiment.config.eval_batch_size, params=params)
    return len(shapes)

  def __call__(self, params) -> dict:
    config, data = self._experiment.config, self._data
    batches = self._batches()
    result = evaluate_metrics(self._experiment, params, batches, limit_batches=self._max_batches)
    if self._num_decoded:
      predictions = self._decoder.decode_ids(data.val_src[:self._num_decoded],
                                             batch_size=config.eval_batch_size, params=params)
      result["exact_match"] = float(np.mean(
          [predicted == expanded for predicted, (_, expanded) in zip(predictions, data.val_pairs)]))
    return result


# ---------------------------------------------------------------------------
# Logging.


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


def _write_scalars(writer, step: int, prefix: str, values: dict) -> None:
  if writer is None:
    return
  for name, value in values.items():
    writer.add_scalar(f"{prefix}/{name}", value, step)
  writer.flush()


def _write_hparams(writer, config: ml_collections.ConfigDict, num_params: int) -> None:
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


def command_line() -> str:
  """This process's command, as a shell would take it back (`python main.py ...`)."""
  argv = list(sys.argv)
  return shlex.join((["python"] if argv and argv[0].endswith(".py") else []) + argv)


# ---------------------------------------------------------------------------
# Resuming, and the short path.


@dataclasses.dataclass
class Resumed:
  """Where a run continues: its state, the checkpoint's step (None: fresh) and skip count."""
  state: TrainState
  step: int | None
  skipped_steps: int


def resume(store: checkpoints.CheckpointStore, state: TrainState,
           train_iter: input_pipeline.TrainIterator, fingerprint: dict, workdir: str) -> Resumed:
  """Restores the latest checkpoint of `store` into `state`'s shardings, and the data position.

  The JSON item is read first, so a checkpoint of another model or data
  stops with what differs before its arrays are read.
  """
  latest = store.latest_step()
  if latest is None:
    return Resumed(state=state, step=None, skipped_steps=0)
  extra = store.restore_extra(latest)
  experiment_lib.check_fingerprint(extra.get("model", {}), fingerprint, store.path(latest))
  experiment_lib.load_vocab(workdir)  # the vocabulary the run was trained with must be this one
  try:
    train_iter.set_state(extra["iterator"])
  except (KeyError, ValueError) as error:
    raise checkpoints.CheckpointError(
        f"checkpoint {store.path(latest)} does not fit this training data and config "
        f"({error}); use the data and seed it was trained with, or another --workdir"
    ) from error
  restored, _ = store.restore(latest, checkpoints.abstract_like(state))
  return Resumed(state=restored, step=latest, skipped_steps=int(extra.get("skipped_steps", 0)))


def fast_dev_run(experiment: Experiment, data: TrainingData) -> dict:
  """One training step and one validation batch; nothing written. Returns the val metrics."""
  multiple = sharding.global_batch_multiple(experiment.mesh)
  state, sums = experiment.train_step(
      experiment.state, step_batch(next(iter(data.train_iter)), experiment.mesh))
  train_metrics = metrics_lib.averages(sums)
  val_metrics = Validator(experiment, data, max_batches=1, max_decoded=multiple)(state.params)
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
  if inference.is_exported(workdir):
    raise checkpoints.CheckpointError(
        f"{workdir} is an exported model (parameters only, no optimizer state to resume "
        "from): train in another --workdir")
  if not config.fast_dev_run:
    # A run whose checkpoints cannot be written stops now.
    checkpoints.ensure_writable_directory(workdir)

  # --- Text -> tokens -> batches; the model, optimizer and steps. ---------------
  vocab = vocab_lib.Vocab.default()
  data = load_training_data(config, vocab, mesh)
  steps_per_epoch = data.train_iter.steps_per_epoch
  total_steps = (1 if config.fast_dev_run
                 else config.max_steps or config.max_epochs * steps_per_epoch)
  val_every = max(1, int(round(config.val_check_interval * steps_per_epoch)))
  experiment = build(config, total_steps, mesh=mesh)
  logging.info("model: %s parameters", f"{experiment.num_params:,}")
  if is_main:
    fresh = " generated afresh each epoch" if config.train_data == "generated" else ""
    print(f"model: {experiment.num_params:,} parameters; "
          f"{data.train_iter.num_examples:,} training examples{fresh}, "
          f"{steps_per_epoch} steps per epoch, {total_steps} steps; "
          f"devices: {jax.device_count()} x {jax.devices()[0].platform}", flush=True)
  if config.fast_dev_run:
    try:
      return fast_dev_run(experiment, data)
    finally:
      data.train_iter.close()
  validate = Validator(experiment, data)

  # --- Resume, run files, logs. ----------------------------------------------------
  store = checkpoints.CheckpointStore(os.path.join(workdir, "checkpoints"),
                                      keep_latest=config.checkpoints_to_keep)
  fingerprint = experiment_lib.model_fingerprint(experiment.model_cfg)
  resumed = resume(store, experiment.state, data.train_iter, fingerprint, workdir)
  state, skipped_steps = resumed.state, resumed.skipped_steps
  if is_main and resumed.step is not None:
    print(f"resuming from checkpoint at step {resumed.step}", flush=True)
  if is_main:
    experiment_lib.write_run_files(workdir, config, vocab)
  # After a kill, the steps logged past the checkpoint are run again: purge_step
  # tells TensorBoard to hide the earlier run's events from that step on.
  writer = None
  if is_main:
    writer = SummaryWriter(workdir, purge_step=None if resumed.step is None else resumed.step + 1)
    if resumed.step is None:
      _write_hparams(writer, config, experiment.num_params)
  run_record = {"model": fingerprint, "command": command_line(),
                "versions": experiment_lib.versions(),
                "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}

  def save(step: int, validation: dict | None = None) -> None:
    extra = dict(run_record, iterator=data.train_iter.get_state(), skipped_steps=skipped_steps,
                 saved_at=experiment_lib.now())
    if validation is not None:
      extra["validation"] = validation
    store.save(step, state, extra,
               metrics=None if validation is None else {"val_loss": validation["loss"]})

  def raise_if_nonfinite(window: LogWindow, step: int) -> None:
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

  # --- Compile every step shape first, timed apart. -------------------------------------
  step = int(jax.device_get(state.step))
  compile_start = time.perf_counter()
  num_train_shapes = compile_train_step(dataclasses.replace(experiment, state=state),
                                        data.train_iter.batch_shapes().values())
  num_val_shapes = validate.compile(state.params)
  compile_seconds = time.perf_counter() - compile_start
  _write_scalars(writer, step, "train", {"compile_seconds": compile_seconds})
  if is_main:
    print(f"compiled {num_train_shapes} training and {num_val_shapes} validation batch shapes "
          f"in {compile_seconds:.1f} s", flush=True)

  # --- Steps. --------------------------------------------------------------------------
  progress = tqdm(total=total_steps, initial=step, desc="train", unit="step",
                  disable=not is_main, dynamic_ncols=True)
  window = LogWindow(track_finite=not config.skip_nonfinite_steps)
  val_metrics = {}
  batches = iter(data.train_iter)
  first_step_of_run = True
  with GracefulStop() as stop:
    try:
      while step < total_steps:
        local_batch = next(batches)
        state, sums = experiment.train_step(state, step_batch(local_batch, mesh))
        step += 1
        window.add(sums, int(local_batch["example_mask"].sum()) * jax.process_count())
        progress.update(1)
        if first_step_of_run:
          # Throughput leaves out the first step, which waits for compilation.
          jax.block_until_ready(sums)
          first_step_of_run = False
          window.restart_clock()
        at_validation = step % val_every == 0 or step == total_steps
        if step % config.log_every_steps == 0 or at_validation:
          raise_if_nonfinite(window, step)
          train_metrics = window.metrics()
          skipped_steps += train_metrics.pop("steps_skipped_in_window")
          train_metrics["learning_rate"] = float(experiment.schedule(step - 1))
          train_metrics["skipped_steps"] = skipped_steps
          _write_scalars(writer, step, "train", train_metrics)
          progress.set_postfix(loss=f"{train_metrics['loss']:.4f}",
                               lr=f"{train_metrics['learning_rate']:.2e}",
                               ex_s=f"{train_metrics['examples_per_second']:,.0f}")
          window.restart()
        if at_validation:
          val_metrics = validate(state.params)
          _write_scalars(writer, step, "val", val_metrics)
          if is_main:  # tqdm.write prints even when the bar is disabled
            progress.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): " + ", ".join(
                f"val {name} {value:.4f}" for name, value in val_metrics.items()))
          save(step, validation=val_metrics)
          window.restart_clock()  # validation time is not training time
        if jax.process_count() > 1 and step % config.log_every_steps == 0:
          # A signal reaches each process on its own: stop together, at the
          # first log step where any process has one.
          stop.agree()
        if stop.requested or (stop_at_step is not None and step >= stop_at_step):
          raise_if_nonfinite(window, step)
          save(step)
          store.wait()
          reason = stop.reason or f"stop_at_step={stop_at_step}"
          if is_main:
            progress.write(f"{reason}: saved a checkpoint at step {step} in {store.directory}; "
                           "run the same command again to resume from it")
          if stop.requested:
            raise TrainingInterrupted(reason, stop.exit_code)
          break
    finally:
      progress.close()
      store.close()
      data.train_iter.close()
      if writer is not None:
        writer.close()
  return val_metrics
