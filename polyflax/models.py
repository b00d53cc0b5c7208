"""Encoder-decoder Transformer in Flax NNX.

The model follows the reference's shape (hidden 256, 3+3 layers, 8 heads,
feed-forward 512, dropout 0.1) with a few deliberate choices:

* one token embedding shared by the encoder, the decoder and the output
  projection (the two sides use the same vocabulary);
* fixed sinusoidal positions (no parameters);
* pre- or post-layer-norm, a config choice (`pre_norm`);
* parameters in float32, matrix products in `dtype` (bfloat16 on a GPU where
  the config asks for it), residual stream, softmax and logits in float32;
* explicit boolean masks everywhere; decoding uses an explicit key/value cache
  (`init_cache` / `decode_step`) and precomputed cross-attention keys and
  values (`cross_attention_cache`), never NNX's implicit decode path.

Shapes: B batch, S source length, T target length, D hidden, H heads,
K = D // H per-head size, V vocabulary size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyflax.vocab import BOS_ID, PAD_ID

# The logit of a masked position (also the score of a ruled-out token in
# decoding): large, finite and negative, so a fully masked row stays finite.
NEG_INF = -1e9


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of the Transformer (a plain, hashable record)."""
  vocab_size: int
  hidden_dim: int = 256
  num_heads: int = 8
  encoder_layers: int = 3
  decoder_layers: int = 3
  encoder_ff_dim: int = 512
  decoder_ff_dim: int = 512
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  max_len: int = 64
  pre_norm: bool = True
  dtype: Any = jnp.float32  # compute dtype of the matrix products

  def __post_init__(self):
    problems = []
    for name in ("vocab_size", "hidden_dim", "num_heads", "encoder_layers",
                 "decoder_layers", "encoder_ff_dim", "decoder_ff_dim", "max_len"):
      if getattr(self, name) <= 0:
        problems.append(f"{name} must be positive (got {getattr(self, name)})")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        problems.append(f"{name} must be in [0, 1) (got {getattr(self, name)})")
    if self.hidden_dim > 0 and self.num_heads > 0 and self.hidden_dim % self.num_heads:
      problems.append(
          f"hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}; "
          "change one of them")
    if problems:
      raise ValueError("invalid model config: " + "; ".join(problems))


def sinusoidal_positions(max_len: int, dim: int) -> np.ndarray:
  """[max_len, dim] fixed sinusoidal position encodings (float32)."""
  positions = np.arange(max_len, dtype=np.float64)[:, None]
  rates = np.exp(-np.log(10000.0) * (np.arange(0, dim, 2, dtype=np.float64) / dim))
  table = np.zeros((max_len, dim), dtype=np.float64)
  table[:, 0::2] = np.sin(positions * rates)
  table[:, 1::2] = np.cos(positions * rates[: dim // 2])
  return table.astype(np.float32)


def padding_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
  """[B, 1, Q, K] mask: True where a valid query may attend to a valid key."""
  return (query_valid[:, None, :, None] & key_valid[:, None, None, :])


def causal_mask(length: int) -> jax.Array:
  """[1, 1, T, T] mask: True where query position >= key position."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


class MultiHeadAttention(nnx.Module):
  """Multi-head dot-product attention with explicit masks and an optional cache."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    dim, dtype = config.hidden_dim, config.dtype
    self.num_heads = config.num_heads
    self.head_dim = dim // config.num_heads
    self.query = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
    # No key bias: it adds the same amount to every logit of a query, which
    # softmax ignores, so its gradient is zero up to rounding noise (that Adam
    # would amplify into a random walk).
    self.key = nnx.Linear(dim, dim, use_bias=False, dtype=dtype, rngs=rngs)
    self.value = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(config.attention_dropout_rate)

  def _heads(self, layer: nnx.Linear, x: jax.Array) -> jax.Array:
    """[B, L, D] -> [B, L, H, K]."""
    y = layer(x)
    return y.reshape(y.shape[:-1] + (self.num_heads, self.head_dim))

  def key_value(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values of `x`, [B, L, H, K] each (what a cache holds)."""
    return self._heads(self.key, x), self._heads(self.value, x)

  def attend(self, query_input, keys, values, mask, *, deterministic, rngs):
    """Attends from `query_input` [B, Q, D] to precomputed keys/values."""
    queries = self._heads(self.query, query_input)
    logits = jnp.einsum("bqhk,bthk->bhqt", queries, keys,
                        preferred_element_type=jnp.float32)
    logits = logits / np.sqrt(self.head_dim).astype(np.float32)
    logits = jnp.where(mask, logits, NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = self.dropout(weights, deterministic=deterministic, rngs=rngs)
    mixed = jnp.einsum("bhqt,bthk->bqhk", weights.astype(values.dtype), values)
    return self.out(mixed.reshape(mixed.shape[:2] + (-1,)))

  def __call__(self, query_input, key_input, mask, *, deterministic, rngs=None):
    keys, values = self.key_value(key_input)
    return self.attend(query_input, keys, values, mask,
                       deterministic=deterministic, rngs=rngs)


class FeedForward(nnx.Module):
  """Position-wise two-layer ReLU network."""

  def __init__(self, dim: int, ff_dim: int, config: ModelConfig, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(dim, ff_dim, dtype=config.dtype, rngs=rngs)
    self.output = nnx.Linear(ff_dim, dim, dtype=config.dtype, rngs=rngs)
    self.dropout = nnx.Dropout(config.dropout_rate)

  def __call__(self, x, *, deterministic, rngs=None):
    h = jax.nn.relu(self.hidden(x))
    h = self.dropout(h, deterministic=deterministic, rngs=rngs)
    return self.output(h)


class Residual(nnx.Module):
  """Wraps a sublayer with dropout, a residual connection and a layer norm.

  Pre-norm: x + drop(f(norm(x))). Post-norm: norm(x + drop(f(x))).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.pre_norm = config.pre_norm
    self.norm = nnx.LayerNorm(config.hidden_dim, epsilon=1e-5, dtype=jnp.float32, rngs=rngs)
    self.dropout = nnx.Dropout(config.dropout_rate)

  def __call__(self, x, sublayer, *, deterministic, rngs=None):
    if self.pre_norm:
      y = sublayer(self.norm(x))
      return x + self.dropout(y, deterministic=deterministic, rngs=rngs).astype(jnp.float32)
    y = sublayer(x)
    return self.norm(x + self.dropout(y, deterministic=deterministic, rngs=rngs).astype(jnp.float32))


class EncoderLayer(nnx.Module):
  """Self-attention over the source, then feed-forward; each in a `Residual`."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.self_attention = MultiHeadAttention(config, rngs=rngs)
    self.attention_residual = Residual(config, rngs=rngs)
    self.feed_forward = FeedForward(config.hidden_dim, config.encoder_ff_dim, config, rngs=rngs)
    self.feed_forward_residual = Residual(config, rngs=rngs)

  def __call__(self, x, mask, *, deterministic, rngs=None):
    kw = dict(deterministic=deterministic, rngs=rngs)
    x = self.attention_residual(x, lambda h: self.self_attention(h, h, mask, **kw), **kw)
    return self.feed_forward_residual(x, lambda h: self.feed_forward(h, **kw), **kw)


class DecoderLayer(nnx.Module):
  """Causal self-attention, cross-attention to the encoder, feed-forward; each in a `Residual`."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.self_attention = MultiHeadAttention(config, rngs=rngs)
    self.self_attention_residual = Residual(config, rngs=rngs)
    self.cross_attention = MultiHeadAttention(config, rngs=rngs)
    self.cross_attention_residual = Residual(config, rngs=rngs)
    self.feed_forward = FeedForward(config.hidden_dim, config.decoder_ff_dim, config, rngs=rngs)
    self.feed_forward_residual = Residual(config, rngs=rngs)

  def __call__(self, x, self_keys_values, self_mask, cross_keys_values, cross_mask, *,
               deterministic, rngs=None):
    """One decoder layer over `x` [B, T, D].

    Args:
      x: the decoder's residual stream.
      self_keys_values: None for teacher forcing (self-attention keys and
        values come from the sublayer's input, normalised when pre-norm), or
        a function of that input returning the (keys, values) to attend to:
        incremental decoding passes one that writes the new position's into
        its cache and returns the whole cache.
      self_mask: self-attention mask, broadcastable to [B, 1, T, L] where L
        is the number of keys (T, or the cache length).
      cross_keys_values: the encoder's (keys, values) for this layer, from
        `Transformer.cross_attention_cache`.
      cross_mask: cross-attention mask, broadcastable to [B, 1, T, S].

    Returns:
      The residual stream after the layer, [B, T, D] float32.
    """
    kw = dict(deterministic=deterministic, rngs=rngs)

    def self_attend(h):
      keys, values = (self.self_attention.key_value(h) if self_keys_values is None
                      else self_keys_values(h))
      return self.self_attention.attend(h, keys, values, self_mask, **kw)

    x = self.self_attention_residual(x, self_attend, **kw)
    x = self.cross_attention_residual(
        x, lambda h: self.cross_attention.attend(h, *cross_keys_values, cross_mask, **kw), **kw)
    return self.feed_forward_residual(x, lambda h: self.feed_forward(h, **kw), **kw)


class Transformer(nnx.Module):
  """Encoder-decoder Transformer with a shared embedding and tied output projection."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    dim = config.hidden_dim
    self.embed = nnx.Embed(config.vocab_size, dim,
                           embedding_init=nnx.initializers.normal(dim ** -0.5), rngs=rngs)
    self.embed_dropout = nnx.Dropout(config.dropout_rate)
    self.encoder_layers = nnx.List([EncoderLayer(config, rngs=rngs)
                                    for _ in range(config.encoder_layers)])
    self.decoder_layers = nnx.List([DecoderLayer(config, rngs=rngs)
                                    for _ in range(config.decoder_layers)])
    # Pre-norm stacks end with a norm; post-norm layers already end normalised.
    if config.pre_norm:
      self.encoder_norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=jnp.float32, rngs=rngs)
      self.decoder_norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=jnp.float32, rngs=rngs)

  def _embed(self, tokens, offset, *, deterministic, rngs):
    """Token embeddings scaled by sqrt(D), plus positions starting at `offset`."""
    length = tokens.shape[1]
    if isinstance(offset, int) and offset + length > self.config.max_len:
      raise ValueError(f"sequence of length {offset + length} exceeds max_len={self.config.max_len}")
    x = self.embed(tokens).astype(jnp.float32) * np.float32(np.sqrt(self.config.hidden_dim))
    positions = jnp.asarray(sinusoidal_positions(self.config.max_len, self.config.hidden_dim))
    x = x + jax.lax.dynamic_slice_in_dim(positions, offset, length)[None]
    return self.embed_dropout(x, deterministic=deterministic, rngs=rngs)

  def _final_hidden(self, x):
    """The decoder's last residual stream as the output projection reads it (normalised)."""
    return self.decoder_norm(x) if self.config.pre_norm else x

  def _logits(self, x):
    return self._project(self._final_hidden(x))

  def _project(self, x):
    """Final hidden states [B, T, D] -> logits [B, T, V] (the tied embedding)."""
    embedding = self.embed.embedding[...].astype(self.config.dtype)
    return jnp.einsum("btd,vd->btv", x.astype(self.config.dtype), embedding,
                      preferred_element_type=jnp.float32)

  def encode(self, inputs, *, deterministic=True, rngs=None):
    """inputs [B, S] int (PAD_ID = padding) -> encoded [B, S, D] float32."""
    valid = inputs != PAD_ID
    mask = padding_mask(valid, valid)
    x = self._embed(inputs, 0, deterministic=deterministic, rngs=rngs)
    for layer in self.encoder_layers:
      x = layer(x, mask, deterministic=deterministic, rngs=rngs)
    return self.encoder_norm(x) if self.config.pre_norm else x

  def cross_attention_cache(self, encoded):
    """Per decoder layer, the cross-attention (keys, values) of the encoder output."""
    return [layer.cross_attention.key_value(encoded) for layer in self.decoder_layers]

  def decode(self, decoder_inputs, encoded, inputs, *, deterministic=True, rngs=None,
             return_hidden=False):
    """Teacher-forced decoding: decoder_inputs [B, T] (bos first) -> logits [B, T, V].

    With `return_hidden`, (logits, hidden): also the final hidden states
    [B, T, D] float32 the logits are projected from (for a training-only head).
    """
    target_valid = jnp.ones(decoder_inputs.shape, dtype=bool)
    self_mask = causal_mask(decoder_inputs.shape[1])
    cross_mask = padding_mask(target_valid, inputs != PAD_ID)
    cross_kv = self.cross_attention_cache(encoded)
    x = self._embed(decoder_inputs, 0, deterministic=deterministic, rngs=rngs)
    for layer, layer_cross_kv in zip(self.decoder_layers, cross_kv):
      x = layer(x, None, self_mask, layer_cross_kv, cross_mask,
                deterministic=deterministic, rngs=rngs)
    hidden = self._final_hidden(x)
    logits = self._project(hidden)
    return (logits, hidden) if return_hidden else logits

  def __call__(self, inputs, targets, *, deterministic=True, rngs=None, return_hidden=False):
    """inputs [B, S], targets [B, T] (eos-terminated, 0-padded) -> logits [B, T, V].

    The decoder reads the targets shifted right by one with bos (BOS_ID) first.
    With `return_hidden`, (logits, final decoder hidden states [B, T, D]).
    """
    encoded = self.encode(inputs, deterministic=deterministic, rngs=rngs)
    return self.decode(shift_right(targets), encoded, inputs,
                       deterministic=deterministic, rngs=rngs, return_hidden=return_hidden)

  # --- incremental decoding with an explicit cache -------------------------

  def init_cache(self, batch_size: int, max_len: int):
    """Empty self-attention cache: per decoder layer, zero keys and values [B, L, H, K]."""
    shape = (batch_size, max_len, self.config.num_heads,
             self.config.hidden_dim // self.config.num_heads)
    return [{"keys": jnp.zeros(shape, self.config.dtype),
             "values": jnp.zeros(shape, self.config.dtype)}
            for _ in self.decoder_layers]

  def decode_step(self, tokens, index, cache, cross_kv, inputs):
    """Decodes one position for every sequence.

    Args:
      tokens: [B] int, the token at position `index` of each sequence.
      index: scalar int32, the position being decoded (same for the batch).
      cache: from `init_cache` or a previous step.
      cross_kv: from `cross_attention_cache`.
      inputs: [B, S] source tokens (for the cross-attention mask).
    Returns:
      (logits [B, V] float32 for position index + 1, updated cache).
    """
    max_len = cache[0]["keys"].shape[1]
    self_mask = (jnp.arange(max_len) <= index)[None, None, None, :]
    cross_mask = (inputs != PAD_ID)[:, None, None, :]
    x = self._embed(tokens[:, None], index, deterministic=True, rngs=None)
    new_cache = []
    for layer, layer_cache, layer_cross_kv in zip(self.decoder_layers, cache, cross_kv):
      updated = {}

      def cached_keys_values(h, layer=layer, layer_cache=layer_cache, updated=updated):
        keys, values = layer.self_attention.key_value(h)
        updated["keys"] = jax.lax.dynamic_update_slice_in_dim(
            layer_cache["keys"], keys.astype(layer_cache["keys"].dtype), index, axis=1)
        updated["values"] = jax.lax.dynamic_update_slice_in_dim(
            layer_cache["values"], values.astype(layer_cache["values"].dtype), index, axis=1)
        return updated["keys"], updated["values"]

      x = layer(x, cached_keys_values, self_mask, layer_cross_kv, cross_mask,
                deterministic=True, rngs=None)
      new_cache.append(updated)
    return self._logits(x)[:, 0], new_cache


def shift_right(targets):
  """[B, T] -> [B, T]: bos then targets[:, :-1]."""
  bos = jnp.full(targets.shape[:1] + (1,), BOS_ID, dtype=targets.dtype)
  return jnp.concatenate([bos, targets[:, :-1]], axis=1)


def count_params(params) -> int:
  """Number of parameters of a model, or of its split parameter state.

  The one place the parameter count is computed: the cap check, the training
  banner, the hyperparameters, the exported model.json and the benchmarks
  all use it. Accepts concrete or abstract (ShapeDtypeStruct) leaves.
  """
  if isinstance(params, nnx.Module):
    params = nnx.state(params, nnx.Param)
  return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(params)))
