"""Autoregressive decoding with an explicit key/value cache.

Greedy and beam search each run as one `jax.lax.while_loop` that stops as soon
as every sequence in the batch has ended. The encoder runs once; the
cross-attention keys and values are computed once; each step feeds one token
per sequence through the decoder and appends its keys and values to the
cache. `recompute_greedy_decode` is the reference's method (the whole prefix
through the decoder at every step), kept for tests and benchmarks.

With `with_confidence=True` greedy and beam search also return each
sequence's confidence: the lowest probability the model gave any token it
chose, eos included (`chosen_probability`: the probability among the tokens
decoding may choose, padding and bos ruled out). A wrong answer almost
always has one token the model was unsure of: on the validation split this
flags errors as well as the probability of the whole sequence or the margin
over the runner-up token do (docs/results.md), and it does not depend on
the answer's length. The threshold below which an answer is doubted is
calibrated per model (`calibration.py`).

All functions are pure over (graphdef, params) so they can be jit-compiled
with the model state replicated and the batch sharded over the mesh.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from polyflax import bucketing
from polyflax import eval_batches
from polyflax import sharding
from polyflax import vocab as vocab_lib
from polyflax.models import NEG_INF
from polyflax.vocab import BOS_ID, EOS_ID, PAD_ID


def _never_pad_or_bos(logits: jax.Array) -> jax.Array:
  """Padding and bos are never outputs: rule them out of every step."""
  vocab = jnp.arange(logits.shape[-1])
  return jnp.where((vocab == PAD_ID) | (vocab == BOS_ID), NEG_INF, logits.astype(jnp.float32))


def chosen_probability(log_probs: jax.Array, chosen: jax.Array) -> jax.Array:
  """The probability of each `chosen` token [...] under `log_probs` [..., V]."""
  return jnp.exp(jnp.take_along_axis(log_probs, chosen[..., None], axis=-1)[..., 0])


def greedy_decode(graphdef, params, inputs: jax.Array, *, max_len: int,
                  with_confidence: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Greedy decoding with a key/value cache.

  Args:
    graphdef, params: the split model.
    inputs: [B, S] source tokens (rows of all zeros are padding and end at once).
    max_len: most tokens to generate, eos included.
    with_confidence: also return each row's confidence.
  Returns:
    [B, max_len] int32 tokens: the output, eos, then zeros; with
    `with_confidence`, also [B] float32: the lowest probability of a token
    chosen (1 for a padding row; see the module docstring).
  """
  model = nnx.merge(graphdef, params)
  batch_size = inputs.shape[0]
  encoded = model.encode(inputs)
  cross_kv = model.cross_attention_cache(encoded)
  init = dict(
      index=jnp.zeros((), jnp.int32),
      tokens=jnp.zeros((batch_size, max_len), jnp.int32),
      current=jnp.full((batch_size,), BOS_ID, jnp.int32),
      finished=inputs[:, 0] == PAD_ID,
      confidence=jnp.ones((batch_size,), jnp.float32),
      cache=model.init_cache(batch_size, max_len),
  )

  def cond(state):
    return (state["index"] < max_len) & ~jnp.all(state["finished"])

  def body(state):
    logits, cache = model.decode_step(state["current"], state["index"], state["cache"],
                                      cross_kv, inputs)
    logits = _never_pad_or_bos(logits)
    chosen = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    probability = chosen_probability(jax.nn.log_softmax(logits), chosen)
    confidence = jnp.where(state["finished"], state["confidence"],
                           jnp.minimum(state["confidence"], probability))
    chosen = jnp.where(state["finished"], PAD_ID, chosen)
    tokens = jax.lax.dynamic_update_slice_in_dim(state["tokens"], chosen[:, None],
                                                 state["index"], axis=1)
    return dict(index=state["index"] + 1, tokens=tokens, current=chosen,
                finished=state["finished"] | (chosen == EOS_ID), confidence=confidence,
                cache=cache)

  final = jax.lax.while_loop(cond, body, init)
  return (final["tokens"], final["confidence"]) if with_confidence else final["tokens"]


def recompute_greedy_decode(graphdef, params, inputs: jax.Array, *, max_len: int) -> jax.Array:
  """Greedy decoding that runs the whole prefix through the decoder at each step.

  The reference's method: same result as `greedy_decode`, O(max_len) times the work.
  """
  model = nnx.merge(graphdef, params)
  batch_size = inputs.shape[0]
  encoded = model.encode(inputs)
  init = dict(
      index=jnp.zeros((), jnp.int32),
      prefix=jnp.zeros((batch_size, max_len), jnp.int32).at[:, 0].set(BOS_ID),
      tokens=jnp.zeros((batch_size, max_len), jnp.int32),
      finished=inputs[:, 0] == PAD_ID,
  )

  def cond(state):
    return (state["index"] < max_len) & ~jnp.all(state["finished"])

  def body(state):
    logits = model.decode(state["prefix"], encoded, inputs)  # causal: later slots unseen
    step_logits = jax.lax.dynamic_index_in_dim(logits, state["index"], axis=1, keepdims=False)
    chosen = jnp.argmax(_never_pad_or_bos(step_logits), axis=-1).astype(jnp.int32)
    chosen = jnp.where(state["finished"], PAD_ID, chosen)
    tokens = jax.lax.dynamic_update_slice_in_dim(state["tokens"], chosen[:, None],
                                                 state["index"], axis=1)
    prefix = jax.lax.dynamic_update_slice_in_dim(
        state["prefix"], chosen[:, None], jnp.minimum(state["index"] + 1, max_len - 1), axis=1)
    return dict(index=state["index"] + 1, prefix=prefix, tokens=tokens,
                finished=state["finished"] | (chosen == EOS_ID))

  return jax.lax.while_loop(cond, body, init)["tokens"]


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT length normalisation ((5 + length) / 6) ** alpha."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def beam_search(graphdef, params, inputs: jax.Array, *, max_len: int, beam_size: int,
                alpha: float = 0.6,
                with_confidence: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Beam search with a key/value cache; returns the best beam, [B, max_len] int32.

  Beams compete on log-probability divided by `length_penalty`; an ended beam
  keeps its score and competes with the live ones until every beam has ended.
  With `with_confidence`, also returns the best beam's confidence [B] float32:
  the lowest probability the model gave a token of that beam (as
  `greedy_decode`'s, not length-penalised).
  """
  model = nnx.merge(graphdef, params)
  batch_size, beams = inputs.shape[0], beam_size
  flat = batch_size * beams
  tiled_inputs = jnp.repeat(inputs, beams, axis=0)
  cross_kv = model.cross_attention_cache(model.encode(inputs))
  cross_kv = jax.tree.map(lambda x: jnp.repeat(x, beams, axis=0), cross_kv)
  # Only beam 0 is live at first, so the first step does not pick k copies.
  first_scores = jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF)
  init = dict(
      index=jnp.zeros((), jnp.int32),
      tokens=jnp.zeros((batch_size, beams, max_len), jnp.int32),
      log_probs=jnp.tile(first_scores[None], (batch_size, 1)),
      lengths=jnp.zeros((batch_size, beams), jnp.int32),
      finished=jnp.tile((inputs[:, 0] == PAD_ID)[:, None], (1, beams)),
      confidence=jnp.ones((batch_size, beams), jnp.float32),
      current=jnp.full((flat,), BOS_ID, jnp.int32),
      cache=model.init_cache(flat, max_len),
  )

  def cond(state):
    return (state["index"] < max_len) & ~jnp.all(state["finished"])

  def body(state):
    logits, cache = model.decode_step(state["current"], state["index"], state["cache"],
                                      cross_kv, tiled_inputs)
    vocab_size = logits.shape[-1]
    step_log_probs = jax.nn.log_softmax(_never_pad_or_bos(logits)).reshape(
        batch_size, beams, vocab_size)
    finished = state["finished"]
    # An ended beam continues only with padding, at no cost.
    pad_only = jnp.where(jnp.arange(vocab_size) == PAD_ID, 0.0, NEG_INF)
    step_log_probs = jnp.where(finished[..., None], pad_only, step_log_probs)
    candidate_log_probs = state["log_probs"][..., None] + step_log_probs
    candidate_lengths = jnp.where(finished, state["lengths"], state["index"] + 1)
    candidate_scores = candidate_log_probs / length_penalty(candidate_lengths, alpha)[..., None]
    _, top = jax.lax.top_k(candidate_scores.reshape(batch_size, -1), beams)
    origin, chosen = top // vocab_size, (top % vocab_size).astype(jnp.int32)
    gather = lambda x: jnp.take_along_axis(x, origin, axis=1)
    tokens = jnp.take_along_axis(state["tokens"], origin[..., None], axis=1)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, chosen[..., None], state["index"], axis=2)
    flat_origin = (origin + jnp.arange(batch_size)[:, None] * beams).reshape(-1)
    cache = jax.tree.map(lambda x: x[flat_origin], cache)
    was_finished = gather(finished)
    # An ended beam's padding has probability 1, so its confidence stays.
    probability = jnp.exp(jnp.take_along_axis(step_log_probs.reshape(batch_size, -1), top,
                                              axis=1))
    return dict(
        index=state["index"] + 1,
        tokens=tokens,
        log_probs=jnp.take_along_axis(candidate_log_probs.reshape(batch_size, -1), top, axis=1),
        lengths=gather(candidate_lengths),
        finished=was_finished | (chosen == EOS_ID),
        confidence=jnp.minimum(gather(state["confidence"]), probability),
        current=chosen.reshape(-1),
        cache=cache,
    )

  final = jax.lax.while_loop(cond, body, init)
  scores = final["log_probs"] / length_penalty(final["lengths"], alpha)
  best = jnp.argmax(scores, axis=1)
  tokens = jnp.take_along_axis(final["tokens"], best[:, None, None], axis=1)[:, 0]
  if not with_confidence:
    return tokens
  return tokens, jnp.take_along_axis(final["confidence"], best[:, None], axis=1)[:, 0]


class Decoded(NamedTuple):
  """Decoded rows, in the order of the source rows."""
  texts: list[str]
  confidences: np.ndarray  # [N] float32: each row's confidence (see the module docstring)


def _with_unknown_confidence(decode_fn: Callable) -> Callable:
  """`decode_fn`, which returns tokens alone, returning NaN confidences beside them."""

  def decode_without_confidence(graphdef, params, inputs):
    tokens = decode_fn(graphdef, params, inputs)
    return tokens, jnp.full(tokens.shape[:1], jnp.nan, jnp.float32)

  return decode_without_confidence


def _search(graphdef, params, inputs, search: Callable,
            settings: tuple) -> tuple[jax.Array, jax.Array]:
  """`search(graphdef, params, inputs, **dict(settings))`: the decoder's compiled function."""
  return search(graphdef, params, inputs, **dict(settings))


class Decoder:
  """Text in, text out: batches, shards and decodes with one compiled function.

  Rows are grouped into length buckets (one compiled shape per bucket), each
  global batch is sharded over the mesh's `data` axis with the parameters
  replicated, and every process receives the whole batch's output, so all
  processes return the same predictions.
  """

  def __init__(self, graphdef, params, vocab: vocab_lib.Vocab, mesh, *, max_len: int,
               batching: bucketing.Batching, beam_size: int = 1,
               length_penalty: float = 0.6, decode_fn: Callable | None = None):
    """Compiles (lazily, per batch shape) the decoding function.

    Args:
      graphdef, params: the split model (`params` may be None when every call
        passes its own, as validation during training does).
      vocab: turns output ids into text.
      mesh: the one-axis `data` mesh.
      max_len: most tokens to generate, eos included.
      batching: the buckets (one compiled shape each) and this process's
        slice of every batch (`input_pipeline.batching`).
      beam_size: 1 for greedy decoding, more for beam search.
      length_penalty: beam search's alpha (see `length_penalty`).
      decode_fn: replaces greedy/beam search: a pure function
        (graphdef, params, inputs) -> [B, max_len] tokens (benchmarks pass
        `recompute_greedy_decode`); its confidences are then NaN.
    """
    self.graphdef, self.params, self.vocab, self.mesh = graphdef, params, vocab, mesh
    self.max_len = max_len
    self.batching = batching
    # The search and its settings are static arguments of a module-level
    # function, not a partial: JAX keeps the program it compiled for them, so
    # a second decoder of the same model and settings in one process (the
    # next validation of a run, a sweep, the tests) reuses it.
    if decode_fn is None and beam_size > 1:
      search, options = beam_search, dict(max_len=max_len, beam_size=beam_size,
                                          alpha=length_penalty, with_confidence=True)
    elif decode_fn is None:
      search, options = greedy_decode, dict(max_len=max_len, with_confidence=True)
    else:
      search, options = _with_unknown_confidence(decode_fn), {}
    replicated = sharding.replicated(mesh)
    batch_sharded = sharding.batch_sharded(mesh)
    compiled = jax.jit(_search, static_argnums=(0, 3, 4), in_shardings=(replicated, batch_sharded),
                       out_shardings=batch_sharded)
    settings = tuple(sorted(options.items()))
    self._decode = lambda graphdef, params, inputs: compiled(graphdef, params, inputs, search,
                                                              settings)

  def fitted_batch_size(self, source_ids: np.ndarray, batch_size: int) -> int:
    """The smallest batch size that needs no more batches than `batch_size` does.

    A padding row costs as much as a real one until its batch ends, so a
    bucket with fewer rows than its batch (a short test file, a --limit) gets
    a batch just big enough for them rather than one padded to full size.
    The result depends only on how many rows each bucket holds, so every
    process computes the same.
    """
    counts = self.batching.count_per_bucket(source_ids, np.zeros_like(source_ids))
    num_batches = lambda size: self.batching.layout(counts, size).num_batches
    # num_batches never grows with the size: find the smallest size that keeps it.
    target, low, high = num_batches(batch_size), 1, batch_size
    while low < high:
      middle = (low + high) // 2
      low, high = (low, middle) if num_batches(middle) <= target else (middle + 1, high)
    return low

  def batches(self, source_ids: np.ndarray, batch_size: int) -> eval_batches.EvalBatches:
    """This process's share of the bucketed global batches of `source_ids` [N, S].

    `batch_size` is the most rows of a batch of the longest bucket; see
    `fitted_batch_size`.
    """
    return eval_batches.EvalBatches(source_ids, np.zeros_like(source_ids),
                                    batch_size=self.fitted_batch_size(source_ids, batch_size),
                                    batching=self.batching)

  def _dispatch(self, inputs: np.ndarray, params) -> tuple[jax.Array, jax.Array]:
    """Starts decoding a local batch [b, S]; returns the (global, sharded) tokens and confidences."""
    global_inputs = sharding.put_batch({"inputs": inputs}, self.mesh)["inputs"]
    return self._decode(self.graphdef, self.params if params is None else params, global_inputs)

  def _gather(self, array: jax.Array) -> np.ndarray:
    """The whole of a batch-sharded global array, on every process."""
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))

  def decode_batch(self, inputs: np.ndarray, params=None) -> np.ndarray:
    """[b, S] local source ids -> [B, max_len] output ids of the global batch.

    `params` replaces the restored parameters (validation during training).
    """
    return self._gather(self._dispatch(inputs, params)[0])

  def warm_up(self, source_ids: np.ndarray, *, batch_size: int, params=None) -> float:
    """Compiles every batch shape that decoding `source_ids` will use; returns the seconds.

    Decodes one batch of padding rows per bucket that `source_ids` fills:
    padding rows end at once, so this costs the compilation and an encoder
    pass, and later timings measure decoding alone. Every process must call it.
    """
    start = time.perf_counter()
    sharding.compile_shapes(lambda batch: self.decode_batch(batch["inputs"], params),
                            self.batches(source_ids, batch_size).layout.shapes)
    return time.perf_counter() - start

  def decode_ids_with_confidence(self, source_ids: np.ndarray, *, batch_size: int,
                                 progress: bool = False, params=None) -> Decoded:
    """Decodes every row of `source_ids` [N, S]; returns N strings and confidences in row order.

    Every process must call it with the same rows; each returns all N rows.
    The next batch is dispatched before the previous one is read back, so the
    device works while the host turns ids into text.
    """
    batches = self.batches(source_ids, batch_size)
    outputs: list[str | None] = [None] * len(source_ids)
    confidences = np.full(len(source_ids), np.nan, np.float32)
    bar = None
    if progress and jax.process_index() == 0:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=len(source_ids), desc="decode", unit="seq", dynamic_ncols=True)

    def collect(decoded: tuple[jax.Array, jax.Array], local_index: np.ndarray) -> None:
      # The row numbers travel the same way as the tokens, so they line up.
      global_index = self._gather(sharding.put_batch({"index": local_index}, self.mesh)["index"])
      real = global_index >= 0
      tokens, confidence = (self._gather(array)[real] for array in decoded)
      for row, text in zip(global_index[real].tolist(), self.vocab.decode_batch(tokens)):
        outputs[row] = text
      confidences[global_index[real]] = confidence
      if bar is not None:
        bar.update(int(real.sum()))

    pending = None
    try:
      for batch in batches:
        decoded = self._dispatch(batch["inputs"], params)
        if pending is not None:
          collect(*pending)
        pending = (decoded, batch["index"])
      if pending is not None:
        collect(*pending)
    finally:
      if bar is not None:
        bar.close()
    return Decoded(outputs, confidences)  # type: ignore[arg-type]

  def decode_ids(self, source_ids: np.ndarray, *, batch_size: int,
                 progress: bool = False, params=None) -> list[str]:
    """Decodes every row of `source_ids` [N, S]; returns N strings in row order.

    As `decode_ids_with_confidence`, without the confidences.
    """
    return self.decode_ids_with_confidence(source_ids, batch_size=batch_size, progress=progress,
                                           params=params).texts

  def decode_texts_with_confidence(self, sources: Sequence[str], *, batch_size: int,
                                   progress: bool = False) -> Decoded:
    """Decodes factored strings (each already checked to fit the vocabulary), with confidences."""
    ids = self.vocab.encode_batch(list(sources), self.max_len)
    return self.decode_ids_with_confidence(ids, batch_size=batch_size, progress=progress)

  def decode_texts(self, sources: Sequence[str], *, batch_size: int,
                   progress: bool = False) -> list[str]:
    """Decodes factored strings (each already checked to fit the vocabulary)."""
    return self.decode_texts_with_confidence(sources, batch_size=batch_size,
                                             progress=progress).texts
