"""Small Transformers with random parameters and random inputs (tests of the model and decoding)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyflax import models

VOCAB_SIZE = 36


def small_config(**overrides):
  fields = dict(vocab_size=VOCAB_SIZE, hidden_dim=32, num_heads=4, encoder_layers=2,
                decoder_layers=2, encoder_ff_dim=64, decoder_ff_dim=64, max_len=32)
  fields.update(overrides)
  return models.ModelConfig(**fields)


@functools.lru_cache(maxsize=None)
def random_model(config, seed=0, scale=0.5):
  """A model whose parameters are perturbed so its outputs vary (an untrained
  model with a tied embedding mostly repeats one token)."""
  graphdef, params = nnx.split(models.Transformer(config, rngs=nnx.Rngs(seed)), nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(params))))
  params = jax.tree.map(lambda x: x + scale * jax.random.normal(next(keys), x.shape), params)
  return graphdef, params


def random_inputs(batch, length, seed=0):
  rng = np.random.default_rng(seed)
  inputs = rng.integers(4, VOCAB_SIZE, (batch, length))
  lengths = rng.integers(3, length + 1, batch)
  inputs[np.arange(length)[None, :] >= lengths[:, None]] = 0
  inputs[-1] = 0  # a padding row
  return jnp.asarray(inputs, jnp.int32)


@functools.partial(jax.jit, static_argnums=0)
def apply(graphdef, params, inputs, targets):
  return nnx.merge(graphdef, params)(inputs, targets)


def tiny_model_and_two_rows():
  """(graphdef, params, numpy batch) of a 1+1-layer model of the default vocabulary and two rows."""
  from polyflax import vocab as vocab_lib  # pylint: disable=import-outside-toplevel
  vocab = vocab_lib.Vocab.default()
  model_cfg = models.ModelConfig(vocab_size=vocab.size, hidden_dim=16, num_heads=2,
                                 encoder_layers=1, decoder_layers=1, encoder_ff_dim=32,
                                 decoder_ff_dim=32, max_len=32)
  graphdef, params = nnx.split(models.Transformer(model_cfg, rngs=nnx.Rngs(0)), nnx.Param)
  batch = {"inputs": vocab.encode_batch(["(k-15)*(2*k+29)", "(21-t)*(-6*t-4)"], 32),
           "targets": vocab.encode_batch(["2*k**2-k-435", "6*t**2-122*t-84"], 32),
           "example_mask": np.ones((2,), np.float32)}
  return graphdef, params, batch
