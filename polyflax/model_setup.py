"""The model of an experiment config: its record, its construction, its fingerprint.

Training (`experiment.py`) and inference (`inference.py`) both build their
model here, so a checkpoint is always read into the model that wrote it:

* `model_config`: the `models.ModelConfig` of a config;
* `create_model`: the model with fresh parameters, split once into a static
  graph definition and its parameters; `abstract_model`: the same as shapes
  only, a restore target that allocates nothing;
* `model_fingerprint` / `check_fingerprint`: the model fields a checkpoint
  records and must match when restored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from polyflax import checkpoint_error
from polyflax import config_checks
from polyflax import models


def compute_dtype(name: str):
  """'auto' is bfloat16 on an accelerator and float32 on the CPU."""
  if name not in config_checks.COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {config_checks.COMPUTE_DTYPES}, not {name!r}")
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
    raise checkpoint_error.CheckpointError(
        f"checkpoint {path} was written for a different model: {differences}; use the config "
        "it was trained with, or another --workdir")
