"""Model shape, parameter count, masks and the cached decoding step.

Decoding with the model (greedy, beam search, the batched decoder) is
tested in test_decode.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyflax import models
from random_models import VOCAB_SIZE, apply, random_inputs, random_model, small_config


@functools.partial(jax.jit, static_argnums=0)
def cached_step(graphdef, params, tokens, index, cache, cross_kv, inputs):
  return nnx.merge(graphdef, params).decode_step(tokens, index, cache, cross_kv, inputs)


def test_reference_shape_has_about_4m_parameters():
  model = nnx.eval_shape(lambda: models.Transformer(models.ModelConfig(vocab_size=VOCAB_SIZE),
                                                    rngs=nnx.Rngs(0)))
  assert 3.9e6 < models.count_params(model) < 4.1e6


@pytest.mark.parametrize("overrides, message", [
    (dict(hidden_dim=30, num_heads=4), "not divisible"),
    (dict(encoder_layers=0), "encoder_layers must be positive"),
    (dict(dropout_rate=1.5), "dropout_rate"),
])
def test_invalid_config_is_refused(overrides, message):
  with pytest.raises(ValueError, match=message):
    small_config(**overrides)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_cached_step_logits_equal_teacher_forced_logits(pre_norm):
  config = small_config(pre_norm=pre_norm)
  graphdef, params = random_model(config)
  model = nnx.merge(graphdef, params)
  inputs = random_inputs(4, 10)
  targets = jnp.asarray(np.random.default_rng(1).integers(4, VOCAB_SIZE, (4, 9)), jnp.int32)
  full = apply(graphdef, params, inputs, targets)
  cross_kv = jax.jit(lambda p, x: nnx.merge(graphdef, p).cross_attention_cache(
      nnx.merge(graphdef, p).encode(x)))(params, inputs)
  cache = model.init_cache(4, 9)
  decoder_inputs = models.shift_right(targets)
  for position in range(9):
    logits, cache = cached_step(graphdef, params, decoder_inputs[:, position],
                                jnp.int32(position), cache, cross_kv, inputs)
    np.testing.assert_allclose(logits, full[:, position], atol=1e-4, rtol=1e-4)


def test_padding_in_the_source_does_not_change_the_output():
  config = small_config()
  graphdef, params = random_model(config)
  inputs = random_inputs(3, 8)[:2]
  padded = jnp.pad(inputs, ((0, 0), (0, 6)))
  targets = jnp.full((2, 5), 7, jnp.int32)
  np.testing.assert_allclose(apply(graphdef, params, inputs, targets),
                             apply(graphdef, params, padded, targets), atol=1e-4)


def test_causal_mask_hides_later_targets():
  config = small_config()
  graphdef, params = random_model(config)
  inputs = random_inputs(2, 6)[:1]
  first = apply(graphdef, params, inputs, jnp.asarray([[5, 6, 7, 8]], jnp.int32))
  second = apply(graphdef, params, inputs, jnp.asarray([[5, 6, 9, 10]], jnp.int32))
  # Logits at positions 0..2 read targets 0..1 only (shifted right by bos).
  np.testing.assert_allclose(first[:, :3], second[:, :3], atol=1e-5)
  assert not np.allclose(first[:, 3], second[:, 3])
