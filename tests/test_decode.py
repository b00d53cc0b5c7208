"""The confidence of decoded sequences: greedy, beam search and the batched Decoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyflax import decode, input_pipeline, models, sharding
from polyflax import vocab as vocab_lib

VOCAB = vocab_lib.Vocab.default()
MAX_LEN = 16


@functools.lru_cache(maxsize=None)
def random_model(seed=0, scale=0.5):
  """A tiny model whose parameters are perturbed so its outputs and their probabilities vary."""
  config = models.ModelConfig(vocab_size=VOCAB.size, hidden_dim=32, num_heads=4, encoder_layers=1,
                              decoder_layers=1, encoder_ff_dim=64, decoder_ff_dim=64,
                              max_len=MAX_LEN)
  graphdef, params = nnx.split(models.Transformer(config, rngs=nnx.Rngs(seed)), nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(params))))
  params = jax.tree.map(lambda x: x + scale * jax.random.normal(next(keys), x.shape), params)
  return graphdef, params


def random_inputs(batch, seed=0):
  """Source rows of random tokens, each ended by eos; the last row is padding."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, MAX_LEN, batch)
  inputs = rng.integers(4, VOCAB.size, (batch, MAX_LEN))
  inputs[np.arange(MAX_LEN)[None] >= lengths[:, None]] = 0
  inputs[np.arange(batch), lengths - 1] = VOCAB.eos_id
  inputs[-1] = 0
  return jnp.asarray(inputs, jnp.int32)


def lowest_chosen_probability(graphdef, params, inputs, tokens):
  """Directly from the logits: each row's lowest probability of a token of `tokens`, eos included.

  The model reads the tokens teacher-forced; pad and bos are ruled out of the
  distribution, as decoding rules them out.
  """
  logits = np.asarray(nnx.merge(graphdef, params)(inputs, jnp.asarray(tokens)), np.float64)
  logits[..., [VOCAB.pad_id, decode.BOS_ID]] = -np.inf
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  tokens = np.asarray(tokens)
  chosen = np.take_along_axis(probabilities, tokens[..., None], -1)[..., 0]
  # Decoding never outputs padding: the output is every token before the first 0.
  return np.where(tokens != 0, chosen, 1.0).min(axis=1)


def _jit(fn, **kwargs):
  return jax.jit(functools.partial(fn, **kwargs), static_argnums=0)


def test_greedy_confidence_is_the_lowest_probability_of_a_chosen_token():
  graphdef, params = random_model()
  inputs = random_inputs(12, seed=1)
  tokens, confidence = _jit(decode.greedy_decode, max_len=MAX_LEN, with_confidence=True)(
      graphdef, params, inputs)
  # The same tokens as without confidence.
  np.testing.assert_array_equal(
      tokens, _jit(decode.greedy_decode, max_len=MAX_LEN)(graphdef, params, inputs))
  expected = lowest_chosen_probability(graphdef, params, inputs, tokens)
  np.testing.assert_allclose(np.asarray(confidence), expected, rtol=1e-4, atol=1e-6)
  assert confidence[-1] == 1.0  # the padding row chose nothing
  assert np.ptp(np.asarray(confidence)[:-1]) > 0.05  # the confidences really vary
  assert np.all(np.asarray(confidence) <= 1.0) and np.all(np.asarray(confidence) > 0.0)


@pytest.mark.parametrize("beam_size, alpha", [(1, 0.6), (4, 0.6), (3, 0.0)])
def test_beam_confidence_is_that_of_the_best_beams_own_tokens(beam_size, alpha):
  graphdef, params = random_model(seed=2)
  inputs = random_inputs(10, seed=3)
  tokens, confidence = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=beam_size,
                            alpha=alpha, with_confidence=True)(graphdef, params, inputs)
  np.testing.assert_array_equal(
      tokens, _jit(decode.beam_search, max_len=MAX_LEN, beam_size=beam_size, alpha=alpha)(
          graphdef, params, inputs))
  expected = lowest_chosen_probability(graphdef, params, inputs, tokens)
  np.testing.assert_allclose(np.asarray(confidence), expected, rtol=1e-4, atol=1e-6)
  assert confidence[-1] == 1.0


def test_a_beam_of_one_has_the_greedy_confidence():
  graphdef, params = random_model(seed=4)
  inputs = random_inputs(8, seed=5)
  _, greedy = _jit(decode.greedy_decode, max_len=MAX_LEN, with_confidence=True)(
      graphdef, params, inputs)
  _, beam = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=1, with_confidence=True)(
      graphdef, params, inputs)
  np.testing.assert_allclose(np.asarray(beam), np.asarray(greedy), rtol=1e-5)


@pytest.mark.parametrize("beam_size", [1, 2])
def test_the_decoder_returns_each_rows_confidence_in_row_order(beam_size):
  graphdef, params = random_model(seed=6)
  inputs = np.asarray(random_inputs(21, seed=7))
  decoder = decode.Decoder(graphdef, params, VOCAB, sharding.make_mesh(), max_len=MAX_LEN,
                           beam_size=beam_size,
                           batching=input_pipeline.Batching(buckets=(8, MAX_LEN)))
  texts, confidences = decoder.decode_ids_with_confidence(inputs, batch_size=4)
  if beam_size == 1:
    direct = _jit(decode.greedy_decode, max_len=MAX_LEN, with_confidence=True)
  else:
    direct = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=beam_size, with_confidence=True)
  tokens, expected = direct(graphdef, params, jnp.asarray(inputs))
  assert texts == VOCAB.decode_batch(np.asarray(tokens))
  assert confidences.dtype == np.float32 and confidences.shape == (21,)
  np.testing.assert_allclose(confidences, np.asarray(expected), rtol=1e-5)
  assert decoder.decode_ids(inputs, batch_size=4) == texts


def test_a_decoding_function_without_confidences_gives_nan():
  graphdef, params = random_model()
  inputs = np.asarray(random_inputs(5, seed=8))
  decoder = decode.Decoder(graphdef, params, VOCAB, sharding.make_mesh(), max_len=MAX_LEN,
                           batching=input_pipeline.Batching(buckets=(MAX_LEN,)),
                           decode_fn=functools.partial(decode.recompute_greedy_decode,
                                                       max_len=MAX_LEN))
  texts, confidences = decoder.decode_ids_with_confidence(inputs, batch_size=8)
  assert np.isnan(confidences).all()
  greedy = decode.Decoder(graphdef, params, VOCAB, sharding.make_mesh(), max_len=MAX_LEN,
                          batching=input_pipeline.Batching(buckets=(MAX_LEN,)))
  assert texts == greedy.decode_ids(inputs, batch_size=8)
