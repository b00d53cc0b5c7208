"""Training: jit-compiled, data-parallel steps over the split NNX model state.

The NNX model is split once (`nnx.split`) into a static graph definition and
its parameters; the train and eval steps are pure functions of a `TrainState`
pytree, compiled with `jax.jit` over a one-axis `data` mesh (batch sharded,
state replicated, state donated). Dropout keys are `fold_in(rng, step)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx, struct
from jax.experimental import multihost_utils

from polyflax import checkpoints
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import decode
from polyflax import input_pipeline
from polyflax import metrics as metrics_lib
from polyflax import models
from polyflax import sharding
from polyflax import vocab as vocab_lib


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes."""
  step: jax.Array
  params: Any  # nnx.State of the model's nnx.Param variables
  opt_state: Any
  rng: jax.Array  # raw uint32 key; dropout uses fold_in(rng, step)


def compute_dtype(name: str):
  """'auto' is bfloat16 on an accelerator and float32 on the CPU."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> models.ModelConfig:
  """The model record of an experiment config."""
  m = config.model
  return models.ModelConfig(
      vocab_size=vocab_size, hidden_dim=m.hidden_dim, num_heads=m.num_heads,
      encoder_layers=m.encoder_layers, decoder_layers=m.decoder_layers,
      encoder_ff_dim=m.encoder_ff_dim, decoder_ff_dim=m.decoder_ff_dim,
      dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
      max_len=config.max_len, pre_norm=m.pre_norm, dtype=compute_dtype(config.compute_dtype))


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then rsqrt or cosine decay."""
  peak, warmup = config.learning_rate, max(1, config.warmup_steps)
  warmup_fn = optax.linear_schedule(0.0, peak, warmup)
  if config.lr_schedule == "cosine":
    decay_fn = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup),
                                           alpha=config.lr_final_fraction)
  elif config.lr_schedule == "rsqrt":
    decay_fn = lambda step: peak * jnp.sqrt(warmup / (step + warmup))
  else:
    raise ValueError(f"lr_schedule must be 'rsqrt' or 'cosine', not {config.lr_schedule!r}")
  return optax.join_schedules([warmup_fn, decay_fn], [warmup])


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
  """AdamW with global-norm gradient clipping."""
  parts = []
  if config.grad_clip_norm and config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2,
                           eps=config.adam_eps, weight_decay=config.weight_decay))
  return optax.chain(*parts)


def create_model(model_cfg: models.ModelConfig, seed: int):
  """Builds the model and splits it once: (graphdef, params)."""
  model = models.Transformer(model_cfg, rngs=nnx.Rngs(params=seed))
  graphdef, params = nnx.split(model, nnx.Param)
  return graphdef, params


def init_state(graphdef, params, tx, seed: int) -> TrainState:
  del graphdef
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed + 1)))


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
  grad_norm = optax.global_norm(grads)
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
  """What a training or evaluation run builds from a config, before the loop."""
  config: ml_collections.ConfigDict
  mesh: Any
  vocab: vocab_lib.Vocab
  model_cfg: models.ModelConfig
  graphdef: Any
  tx: Any
  schedule: Callable
  state: TrainState
  train_step: Callable
  eval_step: Callable


def build(config: ml_collections.ConfigDict, total_steps: int, mesh=None) -> Experiment:
  """Creates the mesh, model, optimizer, replicated state and compiled steps."""
  mesh = sharding.make_mesh() if mesh is None else mesh
  vocab = vocab_lib.Vocab.default()
  model_cfg = model_config(config, vocab.size)
  graphdef, params = create_model(model_cfg, config.seed)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  config_checks.check_param_count(num_params, config)
  schedule = learning_rate_schedule(config, total_steps)
  tx = make_optimizer(config, schedule)
  state = sharding.put_replicated(init_state(graphdef, params, tx, config.seed), mesh)
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
                    graphdef=graphdef, tx=tx, schedule=schedule, state=state,
                    train_step=jit_train, eval_step=jit_eval)


def model_fingerprint(model_cfg: models.ModelConfig) -> dict:
  """The model fields a checkpoint must agree with to be restored.

  The compute dtype is left out: it does not change the parameters, so a run
  started on a GPU in bfloat16 resumes or evaluates on a CPU in float32.
  """
  fields = dataclasses.asdict(model_cfg)
  del fields["dtype"]
  return fields


def check_fingerprint(extra: dict, fingerprint: dict, path: str) -> None:
  """Refuses a checkpoint whose JSON item records another model shape."""
  saved = {name: value for name, value in extra.get("model", {}).items() if name != "dtype"}
  if saved and saved != fingerprint:
    raise checkpoints.CheckpointError(
        f"checkpoint {path} was written for a different model: "
        f"{_differences(saved, fingerprint)}; use the config it was trained with, "
        "or another --workdir")


def evaluate_metrics(experiment: Experiment, params, batches, limit_batches=None) -> dict:
  """Teacher-forced averages over evaluation batches (each example counted once)."""
  total = None
  for index, batch in enumerate(batches):
    if limit_batches is not None and index >= limit_batches:
      break
    total = metrics_lib.add_sums(total, experiment.eval_step(
        params, sharding.put_batch(batch, experiment.mesh)))
  return metrics_lib.averages(total) if total is not None else {}


def prepare_splits(config: ml_collections.ConfigDict) -> dict:
  """Paths of the train/val/test splits of `config.data_dir`, made if needed.

  The source is `data_dir/train.txt` when the user has it; otherwise a file of
  `generated_size` generated lines, `data_dir/dataset.txt`, made once.
  With several processes, process 0 makes them first and the others then
  find its files (on a shared filesystem) or make the same ones (seeded).
  """
  def prepare():
    source = data_lib.source_path(config.data_dir)
    if not source.exists():
      if jax.process_index() == 0:
        print(f"generating {config.generated_size:,} lines into {source}", flush=True)
      data_lib.generate_file(source, config.generated_size, config.data_seed)
    return data_lib.ensure_splits(config.data_dir, seed=config.data_seed)

  if jax.process_count() == 1:
    return prepare()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  paths = prepare() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("polyflax: data splits prepared")
  return paths if paths is not None else prepare()


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


def save_run_files(workdir: str, config: ml_collections.ConfigDict, vocab) -> None:
  """The resolved config and the vocabulary, beside the checkpoints."""
  os.makedirs(workdir, exist_ok=True)
  _atomic_write(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  _atomic_write(os.path.join(workdir, "vocab.json"), vocab.to_json())


def _atomic_write(path: str, text: str) -> None:
  temporary = path + ".tmp"
  with open(temporary, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(temporary, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at_step: int | None = None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  `stop_at_step` stops early, as an interruption would, after saving a
  checkpoint at that step. Returns the last validation metrics.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  config_checks.check_config(config, num_devices=sharding.global_batch_multiple(mesh))
  is_main = jax.process_index() == 0
  fast_dev_run = config.fast_dev_run
  if not fast_dev_run:
    # Before anything slow: a run whose checkpoints cannot be written stops now.
    checkpoints.ensure_writable_directory(workdir)

  # Text -> tokens -> batches.
  vocab = vocab_lib.Vocab.default()
  paths = prepare_splits(config)
  train_src, train_tgt, _ = input_pipeline.load_split(paths["train"], vocab, config.max_len,
                                                      skip_bad=config.skip_bad_lines)
  val_src, val_tgt, val_pairs = input_pipeline.load_split(paths["val"], vocab, config.max_len,
                                                          skip_bad=config.skip_bad_lines)
  batch_multiple = sharding.global_batch_multiple(mesh)
  try:
    train_iter = input_pipeline.TrainIterator(
        train_src, train_tgt, batch_size=config.batch_size, seed=config.seed,
        batch_multiple=batch_multiple, process_index=jax.process_index(),
        process_count=jax.process_count(), buckets=tuple(config.length_buckets))
  except ValueError as error:  # e.g. fewer examples than one batch
    raise config_checks.ConfigError(f"{paths['train']}: {error}") from error
  steps_per_epoch = train_iter.steps_per_epoch
  total_steps = 1 if fast_dev_run else config.max_epochs * steps_per_epoch
  val_every = max(1, int(round(config.val_check_interval * steps_per_epoch)))

  experiment = build(config, total_steps, mesh=mesh)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(experiment.state.params))
  logging.info("model: %s parameters", f"{num_params:,}")
  if is_main:
    print(f"model: {num_params:,} parameters; {len(train_src):,} training examples, "
          f"{steps_per_epoch} steps per epoch, {total_steps} steps; "
          f"devices: {jax.device_count()} x {jax.devices()[0].platform}", flush=True)

  # Exact match is measured by greedy decoding of a fixed sample of the validation split.
  decoder = decode.Decoder(experiment.graphdef, None, vocab, mesh, max_len=config.max_len,
                           buckets=tuple(config.length_buckets))
  num_decoded = min(config.val_exact_match_examples, len(val_pairs))
  if fast_dev_run:
    num_decoded = min(num_decoded, batch_multiple)

  def validate(params, step):
    del step
    batches = input_pipeline.eval_batches(
        val_src, val_tgt, batch_size=config.eval_batch_size, batch_multiple=batch_multiple,
        process_index=jax.process_index(), process_count=jax.process_count(),
        buckets=tuple(config.length_buckets))
    result = evaluate_metrics(experiment, params, batches,
                              limit_batches=1 if fast_dev_run else None)
    if num_decoded:
      predictions = decoder.decode_ids(val_src[:num_decoded], batch_size=config.eval_batch_size,
                                       params=params)
      result["exact_match"] = float(np.mean(
          [predicted == expanded for predicted, (_, expanded) in zip(predictions, val_pairs)]))
    return result

  if fast_dev_run:
    state, sums = experiment.train_step(
        experiment.state, sharding.put_batch(next(iter(train_iter)), mesh))
    train_metrics = metrics_lib.averages(sums)
    val_metrics = validate(state.params, 1)
    if is_main:
      print(f"fast_dev_run: train loss {train_metrics['loss']:.4f}, "
            f"val loss {val_metrics['loss']:.4f}; nothing written", flush=True)
    return val_metrics

  store = checkpoints.CheckpointStore(os.path.join(workdir, "checkpoints"),
                                      keep_latest=config.checkpoints_to_keep)
  state = experiment.state
  fingerprint = model_fingerprint(experiment.model_cfg)
  latest = store.latest_step()
  if latest is not None:
    # The JSON item first: a checkpoint of another model or data stops with
    # what differs, before its arrays are read.
    extra = store.restore_extra(latest)
    check_fingerprint(extra, fingerprint, store.path(latest))
    load_vocab(workdir)  # the vocabulary the run was trained with must be this one
    try:
      train_iter.set_state(extra["iterator"])
    except (KeyError, ValueError) as error:
      raise checkpoints.CheckpointError(
          f"checkpoint {store.path(latest)} does not fit this training data and config "
          f"({error}); use the data and seed it was trained with, or another --workdir"
      ) from error
    state, _ = store.restore(latest, checkpoints.abstract_like(state))
    if is_main:
      print(f"resuming from checkpoint at step {latest}", flush=True)
  if is_main:
    save_run_files(workdir, config, vocab)
  # After a kill, the steps logged past the checkpoint are run again: purge_step
  # tells TensorBoard to hide the earlier run's events from that step on.
  writer = (SummaryWriter(workdir, purge_step=None if latest is None else latest + 1)
            if is_main else None)
  if writer is not None and latest is None:
    _write_hparams(writer, config, num_params)

  step = int(jax.device_get(state.step))
  progress = tqdm(total=total_steps, initial=step, desc="train", unit="step",
                  disable=not is_main, dynamic_ncols=True)
  pending, window_examples, window_start = None, 0, time.perf_counter()
  window_finite = []  # per-step device flags, read at the next check
  val_metrics = {}
  skipped_steps = 0
  first_step_of_run = True
  batches = iter(train_iter)

  def save(step, metrics=None):
    store.save(step, state, {"iterator": train_iter.get_state(), "model": fingerprint,
                             "skipped_steps": skipped_steps}, metrics=metrics)

  def check_finite():
    """Raises NonFiniteLossError naming the first step whose loss was not finite."""
    nonlocal window_finite
    flags = [bool(flag) for flag in jax.device_get(window_finite)]
    first_step = step - len(flags) + 1
    window_finite = []
    for offset, finite in enumerate(flags):
      if not finite:
        store.wait()
        last = store.latest_step()
        kept = (f"the last good checkpoint, {store.path(last)}, is kept" if last is not None
                else "no checkpoint had been saved yet")
        raise NonFiniteLossError(
            f"the training loss was not finite at step {first_step + offset}; stopped without "
            f"saving ({kept}). Lower learning_rate, or set "
            "--config.skip_nonfinite_steps=True to skip such steps")

  with GracefulStop() as stop:
    try:
      while step < total_steps:
        local_batch = next(batches)
        state, sums = experiment.train_step(state, sharding.put_batch(local_batch, mesh))
        step += 1
        window_examples += int(local_batch["example_mask"].sum()) * jax.process_count()
        if not config.skip_nonfinite_steps:
          window_finite.append(sums["finite"])
        pending = metrics_lib.add_sums(pending, sums)
        progress.update(1)
        if first_step_of_run:
          # Throughput leaves out the first step, which waits for compilation.
          jax.block_until_ready(sums)
          first_step_of_run, window_examples, window_start = False, 0, time.perf_counter()
        at_validation = step % val_every == 0 or step == total_steps
        if step % config.log_every_steps == 0 or at_validation:
          check_finite()
          host = jax.device_get(pending)
          elapsed = time.perf_counter() - window_start
          skipped_steps += int(host["steps"] - host["finite"])
          train_metrics = metrics_lib.averages(host)
          train_metrics["grad_norm"] = float(host["grad_norm"] / host["steps"])
          train_metrics["learning_rate"] = float(experiment.schedule(step - 1))
          train_metrics["examples_per_second"] = window_examples / max(elapsed, 1e-9)
          train_metrics["skipped_steps"] = skipped_steps
          _write_scalars(writer, step, "train", train_metrics)
          progress.set_postfix(loss=f"{train_metrics['loss']:.4f}",
                               lr=f"{train_metrics['learning_rate']:.2e}",
                               ex_s=f"{train_metrics['examples_per_second']:,.0f}")
          pending, window_examples, window_start = None, 0, time.perf_counter()
        if at_validation:
          val_metrics = validate(state.params, step)
          _write_scalars(writer, step, "val", val_metrics)
          if is_main:  # tqdm.write prints even when the bar is disabled
            progress.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): " + ", ".join(
                f"val {name} {value:.4f}" for name, value in val_metrics.items()))
          save(step, metrics={"val_loss": val_metrics["loss"]})
          window_start = time.perf_counter()  # validation time is not training time
        if jax.process_count() > 1 and step % config.log_every_steps == 0:
          # A signal reaches each process on its own: stop together, at the
          # first log step where any process has one.
          stop.agree()
        if stop.requested or (stop_at_step is not None and step >= stop_at_step):
          check_finite()
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
      if writer is not None:
        writer.close()
  return val_metrics


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

  def _handle(self, signum, frame):
    del frame
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


def _differences(saved: dict, current: dict) -> str:
  names = sorted(set(saved) | set(current))
  return "; ".join(f"{name}: checkpoint {saved.get(name)!r}, config {current.get(name)!r}"
                   for name in names if saved.get(name) != current.get(name))


@dataclasses.dataclass
class InferenceModel:
  """A restored model ready for decoding."""
  graphdef: Any
  params: Any
  vocab: vocab_lib.Vocab
  model_cfg: models.ModelConfig
  mesh: Any
  step: int
  checkpoint_path: str


def run_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` with the model fields the run in `workdir` was trained with.

  A workdir's `config.json` decides the model's shape, so a checkpoint is
  always restored into the model that wrote it; evaluation settings still come
  from `config` and its command-line overrides.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return config
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if not isinstance(saved, dict) or not isinstance(saved.get("model", {}), dict):
      raise ValueError("not a config object")
  except (OSError, ValueError) as error:
    raise checkpoints.CheckpointError(
        f"cannot read the run's config {path}: {checkpoints.one_line(error)}") from error
  merged = ml_collections.ConfigDict(config.to_dict())
  for name, value in saved.get("model", {}).items():
    if name in merged.model:
      merged.model[name] = value
  for name in ("max_len",):
    if name in saved:
      merged[name] = saved[name]
  return merged


def load_vocab(workdir: str) -> vocab_lib.Vocab:
  """The workdir's vocabulary; it must be the one this code encodes with."""
  path = os.path.join(workdir, "vocab.json")
  default = vocab_lib.Vocab.default()
  if not os.path.exists(path):
    return default
  try:
    saved = vocab_lib.Vocab.load(path)
  except (OSError, ValueError) as error:  # ValueError: bad JSON, bad tokens, not UTF-8
    raise checkpoints.CheckpointError(
        f"cannot read the vocabulary {path}: {checkpoints.one_line(error)}") from error
  if saved != default:
    raise checkpoints.CheckpointError(
        f"vocabulary {path} does not match this version's vocabulary: "
        f"{_vocab_difference(saved, default)}; its checkpoints encode tokens differently")
  return saved


def _vocab_difference(saved: vocab_lib.Vocab, current: vocab_lib.Vocab) -> str:
  for token_id, (there, here) in enumerate(zip(saved.tokens, current.tokens)):
    if there != here:
      return (f"id {token_id} is {there!r} there and {here!r} here "
              f"({saved.size} tokens there, {current.size} here)")
  return f"{saved.size} tokens there, {current.size} here"


def restore_for_inference(config: ml_collections.ConfigDict, workdir: str,
                          step: int | None = None) -> InferenceModel:
  """Restores the best checkpoint (or `step`) of `workdir` for decoding."""
  config = run_config(config, workdir)
  config_checks.check_config(config)
  mesh = sharding.make_mesh()
  vocab = load_vocab(workdir)
  model_cfg = model_config(config, vocab.size)
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise checkpoints.CheckpointError(f"no checkpoints in {directory}: train first "
                                      f"(python main.py --config ... --workdir {workdir})")
  store = checkpoints.CheckpointStore(directory, read_only=True)
  step = store.best_step() if step is None else step
  if step is None:
    raise checkpoints.CheckpointError(f"no complete checkpoint in {directory}")
  tx = make_optimizer(config, learning_rate_schedule(config, 1))
  abstract_state = jax.eval_shape(
      lambda: init_state(None, create_model(model_cfg, config.seed)[1], tx, config.seed))
  replicated = sharding.replicated(mesh)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract_state)
  check_fingerprint(store.restore_extra(step), model_fingerprint(model_cfg), store.path(step))
  state, _ = store.restore(step, abstract_state)
  store.close()
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: models.Transformer(model_cfg, rngs=nnx.Rngs(0))),
                          nnx.Param)
  return InferenceModel(graphdef=graphdef, params=state.params, vocab=vocab, model_cfg=model_cfg,
                        mesh=mesh, step=step, checkpoint_path=os.path.join(directory, str(step)))
