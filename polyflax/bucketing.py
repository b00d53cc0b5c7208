"""Bucket arithmetic: which bucket an example goes to, batch sizes, batch layouts. NumPy only.

Inputs are two int32 arrays of the same number of rows, as made by
`Vocab.encode_batch`: source and target token ids, each row ending in eos and
right-padded with the pad id 0. The length of a row is the position of its
last non-pad token plus one (so it counts the eos).

Batches (of the training streams, `training_streams`, and of evaluation,
`eval_batches`) are dicts of NumPy arrays:

  inputs:        int32   [b, L]  source tokens + eos, 0-padded.
  targets:       int32   [b, L]  target tokens + eos, 0-padded (the model
                                 shifts right and inserts bos itself).
  example_mask:  float32 [b]     1.0 for a real example, 0.0 for a padding row.
  index:         int32   [b]     row of the example in the input arrays, -1 on
                                 padding rows.

where L is the bucket length and b = B / process_count is this process's share
of the global batch size B of that bucket.

Buckets. An example goes to the first bucket whose length is at least
max(source length, target length); both sides are padded to that length, so
one bucket is one static shape. The default lengths (12, 16, 20, 32) are set
by where the data's lengths fall: with eos, about 20% of the examples fit in
12 tokens, 41% in 13..16, 37% in 17..20, and under 2% need more (up to 30: 29
characters plus eos). With these four shapes about 86% of the padded tokens
are real tokens, against 76% with (16, 24, 32) and 46% with one bucket of 32.

Batch sizes keep the tokens per batch about constant (`constant="tokens"`,
the default): `batch_size` is the global batch size B of the longest bucket;
a bucket of length L gets B * L_max / L examples, rounded down to a multiple
of m (never below m), where m = lcm(8, batch_multiple, process_count). With
`constant="examples"` every bucket's batch holds B examples (rounded the
same way), as the reference's batches did.

One description (`Batching`): the buckets, what training batches keep
constant, the batch multiple and this process's slice. Every training stream
and evaluation pass takes one (`input_pipeline.batching` makes it from a
config), and its `BatchLayout` says for each what shapes and how many
batches it has. `BucketedExamples` holds a set of examples sorted into their
buckets, from which both cut their batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from polyflax import vocab as vocab_lib

DEFAULT_BUCKETS = (12, 16, 20, 32)
# What a batch keeps constant across the buckets (see `bucket_batch_sizes`).
BATCH_CONSTANTS = ("tokens", "examples")

Batch = dict[str, np.ndarray]


def example_lengths(ids: np.ndarray) -> np.ndarray:
  """Per row, the position of the last non-pad (non-zero) token plus one."""
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f"expected a 2-D array of token ids, got shape {ids.shape}")
  non_pad = ids != vocab_lib.PAD_ID
  width = ids.shape[1]
  if width == 0:
    return np.zeros(ids.shape[0], dtype=np.int64)
  last_from_end = np.argmax(non_pad[:, ::-1], axis=1)
  return np.where(non_pad.any(axis=1), width - last_from_end, 0)


def _fit_width(ids: np.ndarray, width: int) -> np.ndarray:
  """`ids` as int32 with `width` columns: cut (only pad is cut) or zero-padded."""
  out = np.zeros((ids.shape[0], width), dtype=np.int32)
  kept = min(width, ids.shape[1])
  out[:, :kept] = ids[:, :kept]
  return out


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
  """`buckets` as a tuple of ints; ValueError unless strictly increasing and positive."""
  buckets = tuple(int(length) for length in buckets)
  if not buckets or any(length < 1 for length in buckets) or any(
      a >= b for a, b in zip(buckets, buckets[1:])):
    raise ValueError(f"buckets must be strictly increasing positive lengths, got {buckets}")
  return buckets


def assign_buckets(
    src: np.ndarray, tgt: np.ndarray, buckets: Sequence[int] = DEFAULT_BUCKETS) -> np.ndarray:
  """The bucket number of every example: the first bucket that fits both sides.

  Raises:
    ValueError: if the arrays disagree or an example is longer than the
      longest bucket.
  """
  buckets = check_buckets(buckets)
  src_lengths, tgt_lengths = example_lengths(src), example_lengths(tgt)
  if src_lengths.shape != tgt_lengths.shape:
    raise ValueError(
        f"source and target hold different numbers of examples: "
        f"{src_lengths.size} and {tgt_lengths.size}")
  lengths = np.maximum(src_lengths, tgt_lengths)
  too_long = np.flatnonzero(lengths > buckets[-1])
  if too_long.size:
    row = int(too_long[0])
    raise ValueError(
        f"example {row} has {lengths[row]} tokens, more than the longest bucket "
        f"({buckets[-1]}); {too_long.size} examples are too long")
  return np.searchsorted(np.asarray(buckets), lengths, side="left")


def batch_multiple_of(batch_multiple: int = 1, process_count: int = 1) -> int:
  """The number every batch size is a multiple of: lcm(8, batch_multiple, process_count)."""
  if batch_multiple < 1 or process_count < 1:
    raise ValueError(
        f"batch_multiple and process_count must be positive, got {batch_multiple}, {process_count}")
  return math.lcm(8, batch_multiple, process_count)


def bucket_batch_sizes(
    batch_size: int,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    batch_multiple: int = 1,
    process_count: int = 1,
    constant: str = "tokens") -> tuple[int, ...]:
  """Global batch size of each bucket: about constant tokens, or constant examples.

  Args:
    batch_size: examples per global batch of the longest bucket ("tokens"),
      or of every bucket ("examples").
    buckets: bucket lengths, increasing.
    batch_multiple: every batch size is a multiple of this (e.g. the device count).
    process_count: number of processes sharing each global batch.
    constant: "tokens": a bucket of length L gets batch_size * max(buckets) / L
      examples; "examples": every bucket gets batch_size examples (the
      reference's batches, whatever their length).

  Returns:
    Each bucket's size, rounded down to a multiple of
    lcm(8, batch_multiple, process_count), and at least that multiple.
  """
  buckets = check_buckets(buckets)
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if constant not in BATCH_CONSTANTS:
    raise ValueError(f"constant must be one of {BATCH_CONSTANTS}, got {constant!r}")
  multiple = batch_multiple_of(batch_multiple, process_count)
  longest = buckets[-1]
  examples = [batch_size * longest // length if constant == "tokens" else batch_size
              for length in buckets]
  return tuple(max(multiple, size // multiple * multiple) for size in examples)


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """How one set of examples is cut into batches: the shapes and the batch count.

  Per bucket, in order of length: its length, global and local batch sizes,
  how many examples it holds and how many batches it serves. Every iterator,
  the decoder and the compile step read their shapes and counts here.
  """
  buckets: tuple[int, ...]
  batch_sizes: tuple[int, ...]  # global examples per batch
  local_batch_sizes: tuple[int, ...]  # this process's rows of each global batch
  bucket_counts: tuple[int, ...]  # examples in each bucket
  batches_per_bucket: tuple[int, ...]

  @property
  def num_batches(self) -> int:
    """Batches of the whole pass (a training epoch, or an evaluation)."""
    return sum(self.batches_per_bucket)

  @property
  def shapes(self) -> list[tuple[int, int]]:
    """(local batch size, length) of every bucket that serves a batch: what a step compiles for."""
    return [(local_size, length) for length, local_size, count in zip(
        self.buckets, self.local_batch_sizes, self.batches_per_bucket) if count]


@dataclasses.dataclass(frozen=True)
class Batching:
  """How examples become batches on this process: the one description every user shares.

  Training (`training_streams`), validation and decoding (`eval_batches`)
  and the benchmarks all cut their batches with one of these, made from a
  config and a mesh by `input_pipeline.batching` (or directly, in tests).

  Attributes:
    buckets: bucket lengths, increasing.
    constant: what training batches keep constant across buckets, "tokens"
      or "examples" (see `bucket_batch_sizes`); evaluation batches always
      keep tokens constant, which packs short rows densely.
    batch_multiple: every global batch size is a multiple of this (the
      device count), and of 8.
    process_index, process_count: which rows of every global batch this
      process holds, of how many processes.
  """
  buckets: tuple[int, ...] = DEFAULT_BUCKETS
  constant: str = "tokens"
  batch_multiple: int = 1
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    object.__setattr__(self, "buckets", check_buckets(self.buckets))
    if self.constant not in BATCH_CONSTANTS:
      raise ValueError(f"constant must be one of {BATCH_CONSTANTS}, got {self.constant!r}")
    batch_multiple_of(self.batch_multiple, self.process_count)  # checks both
    if not 0 <= self.process_index < self.process_count:
      raise ValueError(f"process_index must be in [0, process_count={self.process_count}), "
                       f"got {self.process_index}")

  def layout(self, bucket_counts: Sequence[int], batch_size: int, *,
             training: bool = False, drop_remainder: bool = False) -> BatchLayout:
    """The batches of examples whose buckets hold `bucket_counts`, at `batch_size`.

    `training` uses this batching's `constant` (evaluation: "tokens");
    `drop_remainder` drops each bucket's last partial batch instead of
    padding it with masked rows.
    """
    counts = tuple(int(count) for count in bucket_counts)
    if len(counts) != len(self.buckets):
      raise ValueError(f"{len(counts)} bucket counts for {len(self.buckets)} buckets")
    sizes = bucket_batch_sizes(batch_size, self.buckets, self.batch_multiple, self.process_count,
                               self.constant if training else "tokens")
    if drop_remainder:
      per_bucket = tuple(count // size for count, size in zip(counts, sizes))
    else:
      per_bucket = tuple(-(-count // size) for count, size in zip(counts, sizes))
    return BatchLayout(buckets=self.buckets, batch_sizes=sizes,
                       local_batch_sizes=tuple(size // self.process_count for size in sizes),
                       bucket_counts=counts, batches_per_bucket=per_bucket)

  def count_per_bucket(self, src: np.ndarray, tgt: np.ndarray) -> tuple[int, ...]:
    """How many of the examples (src, tgt) fall in each bucket."""
    counts = np.bincount(assign_buckets(src, tgt, self.buckets), minlength=len(self.buckets))
    return tuple(int(count) for count in counts)


def padding_batch(local_size: int, length: int) -> Batch:
  """A batch of masked, all-padding rows: runs a step or the decoder without any example.

  Compiling every shape before training or decoding feeds one of these per
  shape (padding rows end decoding at once and weigh nothing in a loss).
  """
  return {"inputs": np.zeros((local_size, length), np.int32),
          "targets": np.zeros((local_size, length), np.int32),
          "example_mask": np.zeros((local_size,), np.float32),
          "index": np.full((local_size,), -1, np.int32)}


class BucketedExamples:
  """The examples of each bucket, padded to its length, in input order.

  Attributes:
    buckets: the bucket lengths.
    num_examples: rows of the input arrays.
    rows: per bucket, the input rows it holds, ascending.
    counts: per bucket, how many examples it holds.
  """

  def __init__(self, src: np.ndarray, tgt: np.ndarray, buckets: Sequence[int]):
    self.buckets = check_buckets(buckets)
    src, tgt = np.asarray(src), np.asarray(tgt)
    for name, ids in (("source", src), ("target", tgt)):
      if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{name} ids must be a 2-D integer array, got {ids.dtype} of shape {ids.shape}")
    bucket_of_example = assign_buckets(src, tgt, self.buckets)
    self.num_examples = src.shape[0]
    # rows[k]: input rows of bucket k, ascending; _src[k], _tgt[k]: their tokens.
    self.rows, self._src, self._tgt = [], [], []
    for k, length in enumerate(self.buckets):
      rows = np.flatnonzero(bucket_of_example == k).astype(np.int32)
      self.rows.append(rows)
      self._src.append(_fit_width(src[rows], length))
      self._tgt.append(_fit_width(tgt[rows], length))
    self.counts = tuple(rows.size for rows in self.rows)

  def batch(self, bucket: int, order: np.ndarray | None, begin: int, size: int) -> Batch:
    """Examples [begin, begin + size) of a bucket, in `order` (None: input order).

    Positions past the end of the bucket become padding rows.
    """
    end = min(begin + size, self.counts[bucket])
    begin = min(begin, end)
    positions = slice(begin, end) if order is None else order[begin:end]
    num_real = end - begin
    inputs = self._src[bucket][positions]
    targets = self._tgt[bucket][positions]
    index = self.rows[bucket][positions]
    example_mask = np.ones(size, dtype=np.float32)
    if num_real < size:
      length = self.buckets[bucket]
      inputs = np.concatenate([inputs, np.zeros((size - num_real, length), np.int32)])
      targets = np.concatenate([targets, np.zeros((size - num_real, length), np.int32)])
      index = np.concatenate([index, np.full(size - num_real, -1, np.int32)])
      example_mask[num_real:] = 0.0
    elif order is None:
      # Slices are views of the stored arrays: hand out copies.
      inputs, targets, index = inputs.copy(), targets.copy(), index.copy()
    return {
        "inputs": inputs,
        "targets": targets,
        "example_mask": example_mask,
        "index": index,
    }
