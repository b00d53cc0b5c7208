"""What training and inference share: the model, the optimizer, the state, the run files.

From an experiment config (`configs/*.py`) this module builds

* the model record (`model_config`) and the model, split once into a static
  graph definition and its parameters (`create_model`, or `abstract_model`
  for a restore target that allocates nothing);
* the learning-rate schedule and the optimizer (`learning_rate_schedule`,
  `make_optimizer`) and the `TrainState` a training step reads and writes;
* the model fingerprint a checkpoint must match (`model_fingerprint`,
  `check_fingerprint`).

It also owns a run's files beside its checkpoints: `config.json` (the
resolved config) and `vocab.json` (the vocabulary), written together by
`write_run_files` and read by `read_run_config` / `load_vocab`, each failure a
one-line `CheckpointError` naming the file. `run_config` lays the fields that
decide the model's shape and the run's data over a config given for
evaluation or prediction.

Training (`train.py`) and inference (`inference.py`) both import this module;
neither imports the other.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from polyflax import checkpoints
from polyflax import fileio
from polyflax import models
from polyflax import vocab as vocab_lib

RUN_CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
# Fields of a run's config.json that a later evaluation or prediction keeps,
# whatever its own config says: the model's shape, and the data it was
# trained on (its test and training splits).
RUN_MODEL_FIELDS = ("max_len",)
RUN_DATA_FIELDS = ("data_dir", "generated_size", "data_seed")


# ---------------------------------------------------------------------------
# The model.


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


def create_model(model_cfg: models.ModelConfig, seed: int) -> tuple[Any, Any]:
  """Builds the model and splits it once: (graphdef, params)."""
  model = models.Transformer(model_cfg, rngs=nnx.Rngs(params=seed))
  return nnx.split(model, nnx.Param)


def abstract_model(model_cfg: models.ModelConfig) -> tuple[Any, Any]:
  """(graphdef, params as ShapeDtypeStructs): a restore target, nothing allocated."""
  model = nnx.eval_shape(lambda: models.Transformer(model_cfg, rngs=nnx.Rngs(0)))
  return nnx.split(model, nnx.Param)


# ---------------------------------------------------------------------------
# Optimisation.


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


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes."""
  step: jax.Array
  params: Any  # nnx.State of the model's nnx.Param variables
  opt_state: Any
  rng: jax.Array  # raw uint32 key; dropout uses fold_in(rng, step)


def init_state(params, tx, seed: int) -> TrainState:
  """Step 0: the initial parameters, a fresh optimizer state and the dropout key."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed + 1)))


# ---------------------------------------------------------------------------
# Fingerprint.


def model_fingerprint(model_cfg: models.ModelConfig) -> dict:
  """The model fields a checkpoint must agree with to be restored.

  The compute dtype is left out: it does not change the parameters, so a run
  started on a GPU in bfloat16 resumes or evaluates on a CPU in float32.
  """
  fields = dataclasses.asdict(model_cfg)
  del fields["dtype"]
  return fields


def check_fingerprint(saved_model: dict, fingerprint: dict, path: str) -> None:
  """Refuses a checkpoint whose recorded model fields differ from `fingerprint`."""
  saved = {name: value for name, value in saved_model.items() if name != "dtype"}
  if saved and saved != fingerprint:
    differences = "; ".join(
        f"{name}: checkpoint {saved.get(name)!r}, config {fingerprint.get(name)!r}"
        for name in sorted(set(saved) | set(fingerprint))
        if saved.get(name) != fingerprint.get(name))
    raise checkpoints.CheckpointError(
        f"checkpoint {path} was written for a different model: {differences}; use the config "
        "it was trained with, or another --workdir")


# ---------------------------------------------------------------------------
# Run files.


def versions() -> dict:
  """Versions of Python and of the libraries a model depends on (None: not installed)."""
  found = {"python": platform.python_version()}
  for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
    try:
      found[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      found[package] = None
  return found


def now() -> str:
  """The current time, UTC, ISO 8601 to the second."""
  return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def write_run_files(workdir: str, config: ml_collections.ConfigDict,
                    vocab: vocab_lib.Vocab) -> None:
  """The resolved config and the vocabulary, beside the checkpoints (atomically)."""
  fileio.write_text_atomic(os.path.join(workdir, RUN_CONFIG_FILE),
                           config.to_json_best_effort(indent=2))
  fileio.write_text_atomic(os.path.join(workdir, VOCAB_FILE), vocab.to_json())


def read_run_config(workdir: str) -> dict | None:
  """The run's saved config as a dict, or None when the workdir has none.

  Raises:
    CheckpointError: naming the file, when it cannot be read or is not a
      config object.
  """
  path = os.path.join(workdir, RUN_CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if not isinstance(saved, dict) or not isinstance(saved.get("model", {}), dict):
      raise ValueError("not a config object")
  except (OSError, ValueError) as error:  # ValueError: bad JSON, not UTF-8
    raise checkpoints.CheckpointError(
        f"cannot read the run's config {path}: {checkpoints.one_line(error)}") from error
  return saved


def run_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` with the model and data fields the run in `workdir` was trained with.

  A workdir's `config.json` decides the model's shape, so a checkpoint is
  always restored into the model that wrote it, and names the data folder
  whose test and training splits belong to the run. Evaluation settings
  still come from `config` and its command-line overrides.
  """
  saved = read_run_config(workdir)
  if saved is None:
    return config
  merged = ml_collections.ConfigDict(config.to_dict())
  for name, value in saved.get("model", {}).items():
    if name in merged.model:
      merged.model[name] = value
  for name in RUN_MODEL_FIELDS + RUN_DATA_FIELDS:
    if name in saved and name in merged:
      merged[name] = saved[name]
  return merged


def load_vocab(workdir: str) -> vocab_lib.Vocab:
  """The workdir's vocabulary; it must be the one this code encodes with.

  A workdir without `vocab.json` (a run that has not saved yet) gets the
  default vocabulary.
  """
  path = os.path.join(workdir, VOCAB_FILE)
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
