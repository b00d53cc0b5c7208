"""Length-bucketed batches of encoded examples, in NumPy only.

Inputs are two int32 arrays of the same number of rows, as made by
`Vocab.encode_batch`: source and target token ids, each row ending in eos and
right-padded with the pad id 0. The length of a row is the position of its
last non-pad token plus one (so it counts the eos).

Batches are dicts of NumPy arrays:

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

Training order (`TrainIterator`). For epoch e, a generator
`np.random.default_rng(SeedSequence([seed, e]))` draws, bucket by bucket in
order of length, a permutation of the bucket's examples; each permutation is
cut into batches (the remainder is dropped, or padded with
`drop_remainder=False`); then one more permutation of the draws shuffles the
order of all batches of the epoch across buckets. The global order depends on
(seed, e) only, so every process computes the same one, whatever
process_count is; process p takes rows [p * B / P, (p + 1) * B / P) of every
global batch.

Iterator state (`TrainIterator.get_state` / `set_state`): a dict of plain ints

  {"seed": seed, "epoch": e, "position": k}

meaning the next batch served is batch k (0-based) of epoch e. After the last
batch of an epoch the state is (e + 1, 0). A fresh iterator built on the same
data and settings and given this state serves exactly the batches the
original would have served next. The state is JSON-serialisable.

Generated stream (`GeneratedTrainIterator`, `train_data="generated"`): the
same batches, bucketed and ordered as `TrainIterator` orders them, but over
examples generated afresh for every epoch from seeds derived from (seed,
epoch, chunk), so a long run meets millions of distinct rows instead of the
same 760,000 each epoch. Its state adds "generated_per_epoch"; a resumed
stream makes epoch e's examples again and continues at the same batch.

One description (`Batching`): the buckets, what training batches keep
constant, the batch multiple and this process's slice. Made from a config
by `batching`, it builds every training stream and evaluation pass, and a
`BatchLayout` says for each what shapes and how many batches it has.
`training_data` builds a run's whole input from its config in one call.

Reading a split (`load_split`): a text file of `factored=expanded` lines,
read and checked by `data.read_pairs`, becomes the two id arrays plus the
(factored, expanded) string pairs, row i of the arrays being pair i, so
`index` leads back to the text.

Evaluation order (`EvalBatches`). Buckets in order of length, examples in
file order within each bucket, the last batch of each bucket padded with zero
rows whose example_mask is 0 and index -1, so every example appears exactly
once; `len()` gives the number of batches, equal on every process.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
import sys
from typing import Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from polyflax import data as data_lib
from polyflax import generate
from polyflax import vocab as vocab_lib

DEFAULT_BUCKETS = (12, 16, 20, 32)
# What a batch keeps constant across the buckets (see `bucket_batch_sizes`).
BATCH_CONSTANTS = ("tokens", "examples")

Batch = dict[str, np.ndarray]
# The state key that tells a generated stream's state from a split's.
GENERATED_STATE_KEY = "generated_per_epoch"
# The generated stream's share of rows whose linear term cancels, when not 0.
CANCEL_FRACTION_STATE_KEY = "generated_cancel_fraction"
# Mixed into the seeds of generated training lines (any constant would do).
_GENERATED_STREAM_TAG = 0x5EED


def load_split(
    path: str | os.PathLike,
    vocab: vocab_lib.Vocab,
    max_len: int,
    *,
    skip_bad: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
  """Reads (with `data.read_pairs`) and encodes a file of `factored=expanded` lines.

  Args:
    path: the text file.
    vocab: the vocabulary to encode with.
    max_len: width of the returned arrays (tokens + eos).
    skip_bad: leave malformed lines out, reporting how many, instead of
      stopping at the first with a `data.DataError`.

  Returns:
    (src, tgt, pairs): int32 [N, max_len] source and target ids (tokens + eos,
    0-padded) and the N (factored, expanded) pairs, in file order.
  """
  result = data_lib.read_pairs(path, skip_bad=skip_bad)
  if result.skipped:
    print(f"{os.fspath(path)}: skipped {result.skipped} malformed lines "
          f"(the first: {result.problems[0]})", file=sys.stderr, flush=True)
  pairs = result.pairs
  src = vocab.encode_batch([factored for factored, _ in pairs], max_len)
  tgt = vocab.encode_batch([expanded for _, expanded in pairs], max_len)
  return src, tgt, pairs


@dataclasses.dataclass
class TrainingData:
  """What a training run reads: its training stream and its validation split, batched."""
  train: TrainingStream
  val: EvalBatches  # every validation example once, for the teacher-forced metrics
  val_src: np.ndarray  # [N, max_len] source ids, row i of `val_pairs`, for exact match
  val_pairs: list[tuple[str, str]]


def training_data(config, split_paths: Mapping[str, str | os.PathLike], vocab: vocab_lib.Vocab,
                  batching: Batching) -> TrainingData:
  """Text -> tokens -> batches: a run's training stream and validation batches, from its config.

  `train_data="split"` reads the train split; `"generated"` makes fresh
  lines every epoch (as many as the split holds, unless
  `generated_examples_per_epoch` says otherwise). Validation is always the
  fixed validation split, batched at `eval_batch_size`.

  Raises:
    ValueError: the data cannot make a batch (e.g. fewer examples than one).
    data.DataError: a split file that cannot be read.
  """
  read = lambda name: load_split(split_paths[name], vocab, config.max_len,
                                 skip_bad=config.skip_bad_lines)
  train_src, train_tgt, _ = read("train")
  val_src, val_tgt, val_pairs = read("val")
  if config.train_data == "generated":
    per_epoch = config.generated_examples_per_epoch or len(train_src)
    train = batching.generated_iterator(
        generated_examples(vocab, config.max_len, config.data_seed, per_epoch,
                           cancel_fraction=config.generated_cancel_fraction),
        examples_per_epoch=per_epoch, batch_size=config.batch_size, seed=config.seed)
  else:
    train = batching.train_iterator(train_src, train_tgt, batch_size=config.batch_size,
                                    seed=config.seed)
  return TrainingData(train=train,
                      val=batching.eval_batches(val_src, val_tgt,
                                                batch_size=config.eval_batch_size),
                      val_src=val_src, val_pairs=val_pairs)


@dataclasses.dataclass(frozen=True)
class GeneratedExamples:
  """The `make_examples(epoch, chunk)` of a `GeneratedTrainIterator`: fresh lines, encoded.

  Chunk 0 of an epoch has `examples_per_epoch` lines, later chunks a
  twentieth of that. Each (epoch, chunk) has its own generator seed, derived
  from (`seed`, epoch, chunk) and distinct from the seed that generates the
  fixed dataset whose validation and test splits the run is scored on;
  `cancel_fraction` of each chunk's lines are rows whose linear term cancels
  (see `generate.generate_lines`). A plain record, so it can run in another process (see
  `GeneratedTrainIterator`'s `in_process`).
  """
  vocab: vocab_lib.Vocab
  max_len: int
  seed: int
  examples_per_epoch: int
  cancel_fraction: float = 0.0

  def __call__(self, epoch: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [line.split("=") for line in
             generated_lines(self.seed, self.examples_per_epoch, epoch, chunk,
                             cancel_fraction=self.cancel_fraction)]
    return (self.vocab.encode_batch([factored for factored, _ in pairs], self.max_len),
            self.vocab.encode_batch([expanded for _, expanded in pairs], self.max_len))


def generated_lines(seed: int, examples_per_epoch: int, epoch: int, chunk: int, *,
                    cancel_fraction: float = 0.0) -> list[str]:
  """The `factored=expanded` lines of chunk `chunk` of epoch `epoch` of a generated stream.

  What `GeneratedExamples(..., seed, examples_per_epoch, cancel_fraction)(epoch, chunk)`
  encodes; evaluation reads them to tell the test lines a model trained on.
  """
  count = examples_per_epoch if chunk == 0 else max(1, examples_per_epoch // 20)
  chunk_seed = int(np.random.SeedSequence(
      [seed, _GENERATED_STREAM_TAG, epoch, chunk]).generate_state(1)[0])
  return generate.generate_lines(count, chunk_seed, cancel_fraction=cancel_fraction)


def generated_examples(vocab: vocab_lib.Vocab, max_len: int, seed: int,
                       examples_per_epoch: int, *,
                       cancel_fraction: float = 0.0) -> GeneratedExamples:
  """The `make_examples(epoch, chunk)` of fresh lines: see `GeneratedExamples`."""
  if not 0.0 <= cancel_fraction < 1.0:
    raise ValueError(f"cancel_fraction must be in [0, 1), got {cancel_fraction!r}")
  return GeneratedExamples(vocab, max_len, seed, examples_per_epoch, float(cancel_fraction))


def _made_in_subprocess(make_examples, epoch: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """`make_examples(epoch, chunk)` run in a worker process, sent back as bytes-sized ids.

  Token ids fit in a byte (the vocabulary has 36 tokens), which quarters
  what crosses the pipe.
  """
  src, tgt = make_examples(epoch, chunk)
  if max(int(src.max(initial=0)), int(tgt.max(initial=0))) < 256:
    return src.astype(np.uint8), tgt.astype(np.uint8)
  return src, tgt


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


def _check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
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
  buckets = _check_buckets(buckets)
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
  buckets = _check_buckets(buckets)
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

  Training (`train_iterator`, `generated_iterator`), validation and
  decoding (`eval_batches`) and the benchmarks all cut their batches with
  one of these, made from a config and a mesh by `batching` (or directly,
  in tests).

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
    object.__setattr__(self, "buckets", _check_buckets(self.buckets))
    if self.constant not in BATCH_CONSTANTS:
      raise ValueError(f"constant must be one of {BATCH_CONSTANTS}, got {self.constant!r}")
    batch_multiple_of(self.batch_multiple, self.process_count)  # checks both
    _check_process(self.process_index, self.process_count)

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

  def train_iterator(self, src: np.ndarray, tgt: np.ndarray, *, batch_size: int,
                     seed: int) -> "TrainIterator":
    """Shuffled training batches over a fixed set of examples (see `TrainIterator`)."""
    return TrainIterator(src, tgt, batch_size=batch_size, seed=seed, batching=self)

  def generated_iterator(self, make_examples: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
                         *, examples_per_epoch: int, batch_size: int, seed: int,
                         in_process: bool = False) -> "GeneratedTrainIterator":
    """Training batches of examples made afresh every epoch (see `GeneratedTrainIterator`)."""
    return GeneratedTrainIterator(make_examples, examples_per_epoch=examples_per_epoch,
                                  batch_size=batch_size, seed=seed, batching=self,
                                  in_process=in_process)

  def eval_batches(self, src: np.ndarray, tgt: np.ndarray, *, batch_size: int) -> "EvalBatches":
    """Every example once, in a fixed order (see `EvalBatches`)."""
    return EvalBatches(src, tgt, batch_size=batch_size, batching=self)


def batching(config, mesh, *, buckets: Sequence[int] | None = None) -> Batching:
  """The batching of an experiment config on `mesh`, for this process.

  Args:
    config: the experiment config (`length_buckets`, `constant_per_batch`).
    mesh: the device mesh; global batch sizes are multiples of its size.
    buckets: other bucket lengths than the config's (prediction compiles
      one bucket of max_len).
  """
  import jax  # pylint: disable=g-import-not-at-top  # (the rest of this module is NumPy only)
  return Batching(buckets=tuple(config.length_buckets if buckets is None else buckets),
                  constant=config.constant_per_batch, batch_multiple=int(mesh.devices.size),
                  process_index=jax.process_index(), process_count=jax.process_count())


def padding_batch(local_size: int, length: int) -> Batch:
  """A batch of masked, all-padding rows: runs a step or the decoder without any example.

  Compiling every shape before training or decoding feeds one of these per
  shape (padding rows end decoding at once and weigh nothing in a loss).
  """
  return {"inputs": np.zeros((local_size, length), np.int32),
          "targets": np.zeros((local_size, length), np.int32),
          "example_mask": np.zeros((local_size,), np.float32),
          "index": np.full((local_size,), -1, np.int32)}


@runtime_checkable
class TrainingStream(Protocol):
  """What the training loop asks of its batches: `TrainIterator` or `GeneratedTrainIterator`."""

  @property
  def layout(self) -> BatchLayout:
    """Shapes and batches of an epoch."""

  @property
  def steps_per_epoch(self) -> int:
    """Batches in every epoch."""

  @property
  def num_examples(self) -> int:
    """Examples an epoch draws from."""

  def __iter__(self) -> Iterator[Batch]: ...

  def __next__(self) -> Batch: ...

  def get_state(self) -> dict[str, int]:
    """The position in the stream, JSON-serialisable."""

  def set_state(self, state: Mapping[str, int]) -> None:
    """Continues from a `get_state`; ValueError if it does not fit this stream."""

  def close(self) -> None:
    """Stops any work made ahead."""


class _BucketedExamples:
  """The examples of each bucket, padded to its length, in file order."""

  def __init__(self, src: np.ndarray, tgt: np.ndarray, buckets: Sequence[int]):
    self.buckets = _check_buckets(buckets)
    src, tgt = np.asarray(src), np.asarray(tgt)
    for name, ids in (("source", src), ("target", tgt)):
      if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{name} ids must be a 2-D integer array, got {ids.dtype} of shape {ids.shape}")
    bucket_of_example = assign_buckets(src, tgt, self.buckets)
    self.num_examples = src.shape[0]
    # rows[k]: input rows of bucket k, ascending; src[k], tgt[k]: their tokens.
    self.rows, self.src, self.tgt = [], [], []
    for k, length in enumerate(self.buckets):
      rows = np.flatnonzero(bucket_of_example == k).astype(np.int32)
      self.rows.append(rows)
      self.src.append(_fit_width(src[rows], length))
      self.tgt.append(_fit_width(tgt[rows], length))
    self.counts = tuple(rows.size for rows in self.rows)

  def batch(self, bucket: int, order: np.ndarray | None, begin: int, size: int) -> Batch:
    """Examples [begin, begin + size) of a bucket, in `order` (None: file order).

    Positions past the end of the bucket become padding rows.
    """
    end = min(begin + size, self.counts[bucket])
    begin = min(begin, end)
    positions = slice(begin, end) if order is None else order[begin:end]
    num_real = end - begin
    inputs = self.src[bucket][positions]
    targets = self.tgt[bucket][positions]
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


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must be in [0, process_count={process_count}), got {process_index}")


def _resumed_position(epoch: int, position: int, steps_per_epoch: int) -> tuple[int, int]:
  """(epoch, position) of a saved state, checked; the end of an epoch is the next one's start."""
  if epoch < 0 or not 0 <= position <= steps_per_epoch:
    raise ValueError(f"iterator state epoch={epoch}, position={position} is out of range "
                     f"(steps_per_epoch={steps_per_epoch})")
  return (epoch + 1, 0) if position == steps_per_epoch else (epoch, position)


class TrainIterator:
  """Endless iterator over shuffled, length-bucketed training batches.

  See the module docstring for the order, the batch format and the state.
  Iterate with e.g. `for step, batch in zip(range(num_steps), iterator)`.

  Attributes:
    layout: per bucket, the batch sizes and how many batches an epoch serves.
    steps_per_epoch: batches in every epoch.
    shapes: (local batch size, length) of the buckets that serve batches.
    epoch: epoch of the next batch.
    position: batches already served in that epoch.
  """

  def __init__(
      self,
      src: np.ndarray,
      tgt: np.ndarray,
      *,
      batch_size: int,
      seed: int,
      batching: Batching = Batching(),
      drop_remainder: bool = True):
    """Buckets the examples.

    Args:
      src: int32 [N, Ls] source ids (tokens + eos, 0-padded).
      tgt: int32 [N, Lt] target ids (tokens + eos, 0-padded).
      batch_size: global examples per batch of the longest bucket (of every
        bucket with batching.constant="examples").
      seed: non-negative int; the order of epoch e depends on (seed, e) only.
      batching: buckets, batch multiple and this process's slice.
      drop_remainder: drop each bucket's last partial batch (default), or
        serve it padded with masked rows.

    Raises:
      ValueError: on inconsistent arguments, examples too long for the
        buckets, or no batch to serve.
    """
    if int(seed) != seed or seed < 0:
      raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    self._examples = _BucketedExamples(src, tgt, batching.buckets)
    self._seed = int(seed)
    self._process_index = batching.process_index
    self.layout = batching.layout(self._examples.counts, batch_size, training=True,
                                  drop_remainder=drop_remainder)
    if self.layout.num_batches == 0:
      raise ValueError(
          f"no full batch to serve: bucket lengths {self.layout.buckets} hold "
          f"{self.layout.bucket_counts} examples, fewer than their batch sizes "
          f"{self.layout.batch_sizes}; lower batch_size or pass drop_remainder=False")
    self._epoch = 0
    self._position = 0
    self._plan_epoch = None
    self._plan = None

  @property
  def steps_per_epoch(self) -> int:
    return self.layout.num_batches

  @property
  def shapes(self) -> list[tuple[int, int]]:
    return self.layout.shapes

  @property
  def epoch(self) -> int:
    return self._epoch

  @property
  def position(self) -> int:
    return self._position

  @property
  def num_examples(self) -> int:
    return self._examples.num_examples

  def _epoch_plan(self, epoch: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per-bucket example orders, and the bucket and start of every batch."""
    if self._plan_epoch != epoch:
      rng = np.random.default_rng(np.random.SeedSequence([self._seed, epoch]))
      layout = self.layout
      orders = [rng.permutation(count).astype(np.int32) for count in layout.bucket_counts]
      bucket_of_batch = np.repeat(
          np.arange(len(layout.buckets), dtype=np.int64), layout.batches_per_bucket)
      start_of_batch = np.concatenate([
          np.arange(num_batches, dtype=np.int64) * size
          for num_batches, size in zip(layout.batches_per_bucket, layout.batch_sizes)])
      shuffle = rng.permutation(self.steps_per_epoch)
      self._plan = (orders, bucket_of_batch[shuffle], start_of_batch[shuffle])
      self._plan_epoch = epoch
    return self._plan

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    orders, bucket_of_batch, start_of_batch = self._epoch_plan(self._epoch)
    bucket = int(bucket_of_batch[self._position])
    local_size = self.layout.local_batch_sizes[bucket]
    begin = int(start_of_batch[self._position]) + self._process_index * local_size
    batch = self._examples.batch(bucket, orders[bucket], begin, local_size)
    self._position += 1
    if self._position == self.steps_per_epoch:
      self._epoch += 1
      self._position = 0
    return batch

  def close(self) -> None:
    """Nothing to stop (the generated stream's `close` stops its workers)."""

  def get_state(self) -> dict[str, int]:
    """The position in the stream, as plain ints (see the module docstring)."""
    return {"seed": self._seed, "epoch": self._epoch, "position": self._position}

  def set_state(self, state: Mapping[str, int]) -> None:
    """Resumes at a state from `get_state` (of an iterator on the same data and settings).

    Raises:
      ValueError: if the state is malformed, has another seed, or a position
        beyond this iterator's epoch length.
    """
    if GENERATED_STATE_KEY in state:
      raise ValueError("iterator state is of a generated stream (train_data='generated'), "
                       "this iterator reads a split (train_data='split')")
    try:
      seed, epoch, position = (int(state[key]) for key in ("seed", "epoch", "position"))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(
          f"iterator state must hold int seed, epoch and position, got {state!r}") from e
    if seed != self._seed:
      raise ValueError(f"iterator state has seed {seed}, this iterator has seed {self._seed}")
    self._epoch, self._position = _resumed_position(epoch, position, self.steps_per_epoch)


class GeneratedTrainIterator:
  """Endless training batches of freshly generated examples: new examples every epoch.

  Epoch e's examples come from `make_examples(e, chunk)`, which must return
  the same (src, tgt) id arrays for the same (e, chunk) on every call and
  every process (a seeded generator): chunk 0 holds `examples_per_epoch`
  examples, and further chunks are asked for only in the rare epoch whose
  buckets do not fill `steps_per_epoch` batches. The batches of an epoch are
  those `TrainIterator` would serve for epoch e of these examples (same
  seed, buckets, batch sizes and process slices), cut to the first
  `steps_per_epoch`, which is the number of full batches of epoch 0.

  The state is {"seed", "epoch", "position", "generated_per_epoch"}: epoch
  e's examples are made again from (e, chunk), so a resumed run serves the
  same batches as an uninterrupted one. The next epoch is made ahead while
  the current one is served: its examples in a worker process
  (`in_process=False`, the default: generating holds Python's lock for
  seconds, which in a thread would slow every training step by half), or in
  a background thread (`in_process=True`, for a `make_examples` that cannot
  be sent to another process). The worker is spawned, so it imports the
  program's main module again: a script that builds this iterator must keep
  its work under `if __name__ == "__main__":` (main.py and the benchmarks do).
  """

  def __init__(
      self,
      make_examples: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
      *,
      examples_per_epoch: int,
      batch_size: int,
      seed: int,
      batching: Batching = Batching(),
      in_process: bool = False):
    if examples_per_epoch < 1:
      raise ValueError(f"examples_per_epoch must be positive, got {examples_per_epoch}")
    self._make_examples = make_examples
    # Recorded in the state, so a resume with another mix is refused.
    self._cancel_fraction = float(getattr(make_examples, "cancel_fraction", 0.0))
    self._examples_per_epoch = int(examples_per_epoch)
    self._settings = dict(batch_size=batch_size, seed=seed, batching=batching)
    first = self._epoch_iterator(0)  # raises ValueError as TrainIterator does
    # Epoch 0's layout: later epochs serve as many batches, bucket sizes alike.
    self.layout = first.layout
    self.steps_per_epoch = first.steps_per_epoch
    self._seed = int(seed)
    self._epoch, self._position = 0, 0
    self._current = (0, first)
    self._executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="generate-epoch")
    # Spawned, not forked: a fork of a process running JAX's threads is unsafe.
    self._workers = None if in_process else concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    self._next = None  # (epoch, future) of the epoch being made ahead

  @property
  def epoch(self) -> int:
    return self._epoch

  @property
  def position(self) -> int:
    return self._position

  @property
  def num_examples(self) -> int:
    """Examples generated for each epoch (chunk 0)."""
    return self._examples_per_epoch

  @property
  def shapes(self) -> list[tuple[int, int]]:
    """(local batch size, length) of every bucket: any of them may serve in a later epoch."""
    return list(zip(self.layout.local_batch_sizes, self.layout.buckets))

  def _epoch_iterator(self, epoch: int, first_chunk=None) -> TrainIterator:
    """A TrainIterator over epoch `epoch`'s examples, at the start of that epoch.

    `first_chunk`: a future of chunk 0's examples made in the worker process
    (None: make it here). Further chunks, rarely needed, are made here.
    """
    if first_chunk is not None:
      chunks = [tuple(ids.astype(np.int32) for ids in first_chunk.result())]
    else:
      chunks = [self._make_examples(epoch, 0)]
    needed = getattr(self, "steps_per_epoch", 0)  # 0 while epoch 0 defines it
    while True:
      src = np.concatenate([c[0] for c in chunks]) if len(chunks) > 1 else chunks[0][0]
      tgt = np.concatenate([c[1] for c in chunks]) if len(chunks) > 1 else chunks[0][1]
      iterator = TrainIterator(src, tgt, **self._settings)
      if iterator.steps_per_epoch >= needed:
        iterator.set_state({"seed": self._settings["seed"], "epoch": epoch, "position": 0})
        return iterator
      if len(chunks) >= 100:
        raise ValueError(f"epoch {epoch}: {len(chunks)} chunks of examples do not fill "
                         f"{needed} batches")
      chunks.append(self._make_examples(epoch, len(chunks)))

  def _iterator_for(self, epoch: int) -> TrainIterator:
    """Epoch `epoch`'s iterator, made ahead when it was the next one."""
    if self._current[0] == epoch:
      return self._current[1]
    if self._next is not None and self._next[0] == epoch:
      iterator = self._next[1].result()
    else:
      iterator = self._epoch_iterator(epoch)
    self._current, self._next = (epoch, iterator), None
    return iterator

  def _make_ahead(self, epoch: int) -> None:
    if self._next is None or self._next[0] != epoch:
      first_chunk = (None if self._workers is None else
                     self._workers.submit(_made_in_subprocess, self._make_examples, epoch, 0))
      self._next = (epoch, self._executor.submit(self._epoch_iterator, epoch, first_chunk))

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    iterator = self._iterator_for(self._epoch)
    if self._position == 0:
      self._make_ahead(self._epoch + 1)
    batch = next(iterator)
    self._position += 1
    if self._position == self.steps_per_epoch:
      self._epoch, self._position = self._epoch + 1, 0
    return batch

  def get_state(self) -> dict[str, int]:
    """The position in the stream, as plain ints."""
    state = {"seed": self._seed, "epoch": self._epoch, "position": self._position,
             GENERATED_STATE_KEY: self._examples_per_epoch}
    if self._cancel_fraction:  # a state without it is of a stream of the data's own mix
      state[CANCEL_FRACTION_STATE_KEY] = self._cancel_fraction
    return state

  def set_state(self, state: Mapping[str, int]) -> None:
    """Resumes at a state from `get_state` of an iterator with the same settings.

    Raises:
      ValueError: if the state is malformed, of a split iterator, or of
        other settings.
    """
    try:
      seed, epoch, position, per_epoch = (int(state[key]) for key in (
          "seed", "epoch", "position", GENERATED_STATE_KEY))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError("iterator state must hold int seed, epoch, position and "
                       f"generated_per_epoch (a generated stream), got {dict(state)!r}") from e
    if (seed, per_epoch) != (self._seed, self._examples_per_epoch):
      raise ValueError(f"iterator state has seed {seed} and {per_epoch} examples per epoch, "
                       f"this stream {self._seed} and {self._examples_per_epoch}")
    cancel_fraction = float(state.get(CANCEL_FRACTION_STATE_KEY, 0.0))
    if cancel_fraction != self._cancel_fraction:
      raise ValueError(f"iterator state has generated_cancel_fraction={cancel_fraction}, "
                       f"this stream {self._cancel_fraction}")
    epoch, position = _resumed_position(epoch, position, self.steps_per_epoch)
    iterator = self._iterator_for(epoch)
    iterator.set_state({"seed": seed, "epoch": epoch, "position": position})
    self._epoch, self._position = epoch, position

  def close(self) -> None:
    """Stops making epochs ahead."""
    self._executor.shutdown(wait=False, cancel_futures=True)
    if self._workers is not None:
      self._workers.shutdown(wait=False, cancel_futures=True)


class EvalBatches:
  """Re-iterable evaluation batches: every example exactly once, in a fixed order.

  Buckets in order of length, examples in input order within each; the last
  batch of each bucket is padded with masked rows. `len()` is the number of
  batches, the same on every process.

  Attributes:
    layout: per bucket, the batch sizes and how many batches it serves.
  """

  def __init__(self, src: np.ndarray, tgt: np.ndarray, *, batch_size: int,
               batching: Batching = Batching()):
    self._examples = _BucketedExamples(src, tgt, batching.buckets)
    self._process_index = batching.process_index
    self.layout = batching.layout(self._examples.counts, batch_size)

  @property
  def num_examples(self) -> int:
    return self._examples.num_examples

  def __len__(self) -> int:
    return self.layout.num_batches

  def __iter__(self) -> Iterator[Batch]:
    layout = self.layout
    for bucket, num_batches in enumerate(layout.batches_per_bucket):
      size, local_size = layout.batch_sizes[bucket], layout.local_batch_sizes[bucket]
      for batch_number in range(num_batches):
        begin = batch_number * size + self._process_index * local_size
        yield self._examples.batch(bucket, None, begin, local_size)
