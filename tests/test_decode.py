"""Decoding: greedy and beam search on a model, and the batched decoder's buckets and rows."""

import functools
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyflax import bucketing, decode, eval_batches, generate, models, sharding
from polyflax import vocab as vocab_lib
from random_models import VOCAB_SIZE, apply, random_inputs, random_model, small_config

VOCAB = vocab_lib.Vocab.default()
MAX_LEN = 16  # of the confidence tests' model
# Rows of the confidence tests' inputs: one batch shape, so the tests share programs;
# the batched decoder cuts them into three batches (two of the longer bucket).
ROWS = 16


# ---------------------------------------------------------------------------
# Decoder: buckets, batches and row order.


def decode_compilations(records):
  """The shapes the decoding function was compiled for, from `jax.log_compiles` records."""
  return [record.getMessage() for record in records
          if re.search(r"Compiling \S*\b_search\b", record.getMessage())]


def test_bucketed_batched_decoding_returns_every_row_in_order(caplog):
  config = models.ModelConfig(vocab_size=VOCAB.size, hidden_dim=32, num_heads=4, encoder_layers=1,
                              decoder_layers=1, encoder_ff_dim=64, decoder_ff_dim=64, max_len=16)
  graphdef, params = nnx.split(models.Transformer(config, rngs=nnx.Rngs(3)), nnx.Param)
  keys = iter(jax.random.split(jax.random.key(4), len(jax.tree.leaves(params))))
  params = jax.tree.map(lambda x: x + 0.5 * jax.random.normal(next(keys), x.shape), params)
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 16, 45)
  source_ids = rng.integers(4, VOCAB.size, (45, 16)).astype(np.int32)
  source_ids[np.arange(16)[None] >= lengths[:, None]] = 0
  source_ids[np.arange(45), lengths - 1] = VOCAB.eos_id
  mesh = sharding.make_mesh()
  decoder = decode.Decoder(graphdef, params, VOCAB, mesh, max_len=16,
                           batching=bucketing.Batching(buckets=(8, 16)))
  jax.clear_caches()  # JAX would reuse what an earlier test compiled for this model
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    decoder.warm_up(source_ids, batch_size=8)
    warm_up_compilations = decode_compilations(caplog.records)
    caplog.clear()
    # Batches of 16 and 8 rows: several per bucket, the last ones part padding.
    decoded = decoder.decode_ids(source_ids, batch_size=8)
    decode_compilations_after_warm_up = decode_compilations(caplog.records)
  # Warming up compiles one shape per bucket; decoding then compiles nothing.
  assert len(warm_up_compilations) == 2, warm_up_compilations
  assert decode_compilations_after_warm_up == []
  direct = jax.jit(lambda p, x: decode.greedy_decode(graphdef, p, x, max_len=16))(
      params, jnp.asarray(source_ids))
  expected = VOCAB.decode_batch(np.asarray(direct))
  assert decoded == expected
  assert len(set(expected)) > 5  # the outputs differ from row to row


def test_batches_shrink_to_fit_a_small_set_but_never_multiply():
  decoder = decode.Decoder(None, None, VOCAB, sharding.make_mesh(), max_len=32,
                           batching=bucketing.Batching())
  factored = [line.split("=")[0] for line in generate.generate_lines(300, seed=0)]
  source_ids = VOCAB.encode_batch(factored, 32)
  full = decoder.batches(source_ids, 4096)
  layout = full.layout
  assert len(full) == sum(count > 0 for count in layout.bucket_counts)  # one batch per bucket
  assert sum(layout.batch_sizes) < 2 * 300  # not 4096 * (32 / 12 + 32 / 16 + 32 / 20 + 1)
  for count, size in zip(layout.bucket_counts, layout.batch_sizes):
    assert size >= count
  for batch_size in (8, 64, 256):
    expected = len(eval_batches.EvalBatches(source_ids, np.zeros_like(source_ids),
                                            batch_size=batch_size, batching=decoder.batching))
    assert len(decoder.batches(source_ids, batch_size)) == expected


# ---------------------------------------------------------------------------
# Greedy and beam search on a small model with random parameters.


def _jit(fn, **kwargs):
  """`fn` compiled with its settings `kwargs` static.

  Tests that decode the same number of rows with the same settings on models
  of one graph then share the program, which jax keeps (compiling decoders
  is most of this file's time).
  """
  return functools.partial(jax.jit(fn, static_argnums=0, static_argnames=tuple(kwargs)),
                           **kwargs)


def test_cached_greedy_decoder_gives_the_recompute_decoders_tokens():
  graphdef, params = random_model(small_config())
  inputs = random_inputs(16, 12, seed=4)
  cached = _jit(decode.greedy_decode, max_len=20)(graphdef, params, inputs)
  recomputed = _jit(decode.recompute_greedy_decode, max_len=20)(graphdef, params, inputs)
  np.testing.assert_array_equal(cached, recomputed)
  assert len(np.unique(np.asarray(cached))) > 3  # the outputs really vary
  assert np.all(np.asarray(cached)[-1] == 0)  # the padding row ends at once


def test_beam_of_one_is_greedy_and_wider_beams_score_no_worse():
  graphdef, params = perturbed_model(seed=8)
  inputs = eos_inputs(ROWS, seed=6)
  greedy = _jit(decode.greedy_decode, max_len=MAX_LEN)(graphdef, params, inputs)
  beam1 = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=1, alpha=0.6)(graphdef, params,
                                                                             inputs)
  np.testing.assert_array_equal(greedy, beam1)
  beam3 = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=3, alpha=0.0)(graphdef, params,
                                                                             inputs)

  def log_prob(tokens):
    logits = apply(graphdef, params, inputs, tokens).astype(jnp.float32)
    logits = jnp.where(jnp.arange(VOCAB_SIZE) < 2, -1e9, logits)  # pad and bos are never outputs
    per_token = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)[..., 0]
    return jnp.sum(per_token * (tokens != 0), axis=1)

  # With alpha=0 both are scored by their summed log-probability, ended or not.
  beam_scores, greedy_scores = np.asarray(log_prob(beam3)), np.asarray(log_prob(greedy))
  assert np.all(beam_scores[:-1] >= greedy_scores[:-1] - 1e-3)
  assert np.any(beam_scores[:-1] > greedy_scores[:-1] + 1e-2)  # the beam finds better outputs


def _eos_like(params, token, scale):
  """`params` with the eos embedding set to `scale` times the embedding of `token`."""
  def edit(path, x):
    if "['embed']['embedding']" in jax.tree_util.keystr(path):
      return x.at[decode.EOS_ID].set(scale * x[token])
    return x
  return jax.tree_util.tree_map_with_path(edit, params)


def _best_of_two_tokens(graphdef, params, source, alpha):
  """By brute force, the best output of at most two tokens: [eos, 0] or [t1, t2].

  Returns it with the log-probabilities of [eos] and of the likeliest [t1, t2].
  """
  choices = np.arange(2, VOCAB_SIZE)  # every token but pad and bos
  targets = jnp.asarray(np.stack([choices, np.zeros_like(choices)], 1), jnp.int32)
  logits = apply(graphdef, params, jnp.repeat(source[None], len(choices), 0), targets)
  logits = jnp.where(jnp.arange(VOCAB_SIZE) < 2, -1e9, logits.astype(jnp.float32))
  log_probs = np.asarray(jax.nn.log_softmax(logits))  # [first token, position, vocab]
  penalty = lambda length: float(decode.length_penalty(jnp.int32(length), alpha))
  first = log_probs[0, 0, choices]
  pairs = first[:, None] + log_probs[:, 1, choices]
  pairs[choices == decode.EOS_ID] = -np.inf  # nothing follows eos
  eos = first[choices == decode.EOS_ID][0]
  t1, t2 = np.unravel_index(np.argmax(pairs), pairs.shape)
  best = [decode.EOS_ID, 0] if eos / penalty(1) > pairs.max() / penalty(2) else [
      choices[t1], choices[t2]]
  return best, eos, pairs.max()


def test_beam_of_every_token_is_an_exhaustive_search_of_two_token_outputs():
  graphdef, params = random_model(small_config())
  inputs = random_inputs(3, 8, seed=2)[:2]
  alpha = 1.0
  beam_search = _jit(decode.beam_search, max_len=2, beam_size=VOCAB_SIZE - 2, alpha=alpha)
  # Random parameters seldom end early; an eos embedding close to that of the
  # likeliest first token makes [eos] compete with the two-token outputs.
  likeliest = _best_of_two_tokens(graphdef, params, inputs[0], alpha)[0][0]
  early_ends = decided_by_length = 0
  for scale in (None, 0.88, 0.91, 0.94, 0.97):
    variant = params if scale is None else _eos_like(params, likeliest, scale)
    beam = np.asarray(beam_search(graphdef, variant, inputs))
    for row, source in enumerate(inputs):
      best, eos, pair = _best_of_two_tokens(graphdef, variant, source, alpha)
      np.testing.assert_array_equal(beam[row], best)
      early_ends += best[0] == decode.EOS_ID
      decided_by_length += best[0] != decode.EOS_ID and eos > pair
  assert early_ends  # [eos] won somewhere
  assert decided_by_length  # and somewhere it was likelier but lost to length normalisation


# ---------------------------------------------------------------------------
# The confidence of decoded sequences: greedy, beam search and the batched Decoder.


@functools.lru_cache(maxsize=None)
def perturbed_model(seed=0, scale=0.5):
  """A tiny model whose parameters are perturbed so its outputs and their probabilities vary."""
  config = models.ModelConfig(vocab_size=VOCAB.size, hidden_dim=32, num_heads=4, encoder_layers=1,
                              decoder_layers=1, encoder_ff_dim=64, decoder_ff_dim=64,
                              max_len=MAX_LEN)
  graphdef, params = nnx.split(models.Transformer(config, rngs=nnx.Rngs(seed)), nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(params))))
  params = jax.tree.map(lambda x: x + scale * jax.random.normal(next(keys), x.shape), params)
  return graphdef, params


def eos_inputs(batch, seed=0):
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
  logits = np.asarray(apply(graphdef, params, inputs, jnp.asarray(tokens)), np.float64)
  logits[..., [VOCAB.pad_id, decode.BOS_ID]] = -np.inf
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  tokens = np.asarray(tokens)
  chosen = np.take_along_axis(probabilities, tokens[..., None], -1)[..., 0]
  # Decoding never outputs padding: the output is every token before the first 0.
  return np.where(tokens != 0, chosen, 1.0).min(axis=1)


def test_greedy_confidence_is_the_lowest_probability_of_a_chosen_token():
  graphdef, params = perturbed_model()
  inputs = eos_inputs(ROWS, seed=1)
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
  graphdef, params = perturbed_model(seed=2)
  inputs = eos_inputs(ROWS, seed=3)
  tokens, confidence = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=beam_size,
                            alpha=alpha, with_confidence=True)(graphdef, params, inputs)
  np.testing.assert_array_equal(
      tokens, _jit(decode.beam_search, max_len=MAX_LEN, beam_size=beam_size, alpha=alpha)(
          graphdef, params, inputs))
  expected = lowest_chosen_probability(graphdef, params, inputs, tokens)
  np.testing.assert_allclose(np.asarray(confidence), expected, rtol=1e-4, atol=1e-6)
  assert confidence[-1] == 1.0


def test_a_beam_of_one_has_the_greedy_confidence():
  graphdef, params = perturbed_model(seed=4)
  inputs = eos_inputs(ROWS, seed=5)
  _, greedy = _jit(decode.greedy_decode, max_len=MAX_LEN, with_confidence=True)(
      graphdef, params, inputs)
  _, beam = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=1, alpha=0.6,
                 with_confidence=True)(graphdef, params, inputs)
  np.testing.assert_allclose(np.asarray(beam), np.asarray(greedy), rtol=1e-5)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_the_decoder_returns_each_rows_confidence_in_row_order(beam_size):
  graphdef, params = perturbed_model(seed=6)
  inputs = np.asarray(eos_inputs(ROWS, seed=7))
  decoder = decode.Decoder(graphdef, params, VOCAB, sharding.make_mesh(), max_len=MAX_LEN,
                           beam_size=beam_size,
                           batching=bucketing.Batching(buckets=(8, MAX_LEN)))
  assert len(decoder.batches(inputs, 4)) == 3  # rows come back from several batches
  texts, confidences = decoder.decode_ids_with_confidence(inputs, batch_size=4)
  if beam_size == 1:
    direct = _jit(decode.greedy_decode, max_len=MAX_LEN, with_confidence=True)
  else:
    direct = _jit(decode.beam_search, max_len=MAX_LEN, beam_size=beam_size, alpha=0.6,
                  with_confidence=True)
  tokens, expected = direct(graphdef, params, jnp.asarray(inputs))
  assert texts == VOCAB.decode_batch(np.asarray(tokens))
  assert confidences.dtype == np.float32 and confidences.shape == (ROWS,)
  np.testing.assert_allclose(confidences, np.asarray(expected), rtol=1e-5)
  assert decoder.decode_ids(inputs, batch_size=4) == texts


def test_a_decoding_function_without_confidences_gives_nan():
  graphdef, params = perturbed_model()
  inputs = np.asarray(eos_inputs(5, seed=8))
  decoder = decode.Decoder(graphdef, params, VOCAB, sharding.make_mesh(), max_len=MAX_LEN,
                           batching=bucketing.Batching(buckets=(MAX_LEN,)),
                           decode_fn=functools.partial(decode.recompute_greedy_decode,
                                                       max_len=MAX_LEN))
  texts, confidences = decoder.decode_ids_with_confidence(inputs, batch_size=8)
  assert np.isnan(confidences).all()
  greedy = decode.Decoder(graphdef, params, VOCAB, sharding.make_mesh(), max_len=MAX_LEN,
                          batching=bucketing.Batching(buckets=(MAX_LEN,)))
  assert texts == greedy.decode_ids(inputs, batch_size=8)
