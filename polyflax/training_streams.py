"""Resumable training streams: endless shuffled batches, a saved position, what was served.

Training order (`TrainIterator`). For epoch e, a generator
`np.random.default_rng(SeedSequence([seed, e]))` draws, bucket by bucket in
order of length, a permutation of the bucket's examples; each permutation is
cut into batches (the remainder is dropped, or padded with
`drop_remainder=False`); then one more permutation of the draws shuffles the
order of all batches of the epoch across buckets. The global order depends on
(seed, e) only, so every process computes the same one, whatever
process_count is; process p takes rows [p * B / P, (p + 1) * B / P) of every
global batch (batches and buckets: see `bucketing`).

State (`get_state` / `set_state`): a dict of plain ints

  {"seed": seed, "epoch": e, "position": k}

meaning the next batch served is batch k (0-based) of epoch e. After the last
batch of an epoch the state is (e + 1, 0). A fresh stream built on the same
data and settings and given this state serves exactly the batches the
original would have served next. The state is JSON-serialisable; training
checkpoints keep it (`run_record.RunRecord.iterator`).

Generated stream (`GeneratedTrainIterator`, `train_data="generated"`): the
same batches over examples generated afresh for every epoch, so a long run
meets millions of distinct rows instead of the same 760,000 each epoch. Its
state adds "generated_per_epoch" (and the row mix's shares not 0, `RowMix.state_fields`).

What a state has trained on (`trained_lines`): given a saved state, a stream
says which lines its batches held before it, epoch by epoch, on every
process: exactly what a run at that state trained on (evaluation splits the
test lines into seen and unseen by it). Only this module reads the keys of a
state.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from polyflax import bucketing
from polyflax import row_mix
from polyflax.bucketing import Batch, Batching

# The state key that tells a generated stream's state from a split's.
_GENERATED_STATE_KEY = "generated_per_epoch"
# A generated epoch whose buckets do not fill its batches takes more chunks, up to this many.
_MAX_CHUNKS = 100


class TrainedLines:
  """The lines a stream served before a saved state, one list per epoch begun.

  `len()` is the number of epochs begun (the last one may be partial);
  iterating makes each epoch's list in turn (a generated stream makes that
  epoch's lines again), holding the `factored=expanded` line of every example
  in the epoch's batches served before the state, on every process. A line
  recurs across epochs, and within one when the data holds it twice.

  Attributes:
    examples_per_epoch: the examples each epoch draws from.
  """

  def __init__(self, epochs: int, examples_per_epoch: int,
               lines_of_epoch: Callable[[int], list[str]]):
    self._epochs = epochs
    self.examples_per_epoch = examples_per_epoch
    self._lines_of_epoch = lines_of_epoch

  def __len__(self) -> int:
    return self._epochs

  def __iter__(self) -> Iterator[list[str]]:
    for epoch in range(self._epochs):
      yield self._lines_of_epoch(epoch)


@runtime_checkable
class TrainingStream(Protocol):
  """What the training loop asks of its batches: `TrainIterator` or `GeneratedTrainIterator`."""

  @property
  def layout(self) -> bucketing.BatchLayout:
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

  def trained_lines(self, state: Mapping[str, int]) -> TrainedLines:
    """The lines served before `state`; ValueError if it does not fit this stream."""

  def close(self) -> None:
    """Stops any work made ahead."""


def _resumed_position(epoch: int, position: int, steps_per_epoch: int) -> tuple[int, int]:
  """(epoch, position) of a saved state, checked; the end of an epoch is the next one's start."""
  if epoch < 0 or not 0 <= position <= steps_per_epoch:
    raise ValueError(f"iterator state epoch={epoch}, position={position} is out of range "
                     f"(steps_per_epoch={steps_per_epoch})")
  return (epoch + 1, 0) if position == steps_per_epoch else (epoch, position)


def saved_examples_per_epoch(state: Mapping[str, int]) -> int | None:
  """The examples per epoch of the generated stream that saved `state` (None: a split's state)."""
  return int(state[_GENERATED_STATE_KEY]) if _GENERATED_STATE_KEY in state else None


class TrainIterator:
  """Endless iterator over shuffled, length-bucketed training batches.

  See the module docstring for the order and the state, `bucketing` for the
  batch format. Iterate with e.g.
  `for step, batch in zip(range(num_steps), iterator)`.

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
      drop_remainder: bool = True,
      lines: Sequence[str] | None = None):
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
      lines: the `factored=expanded` text of row i, for `trained_lines`
        (None: the stream cannot say which lines it served).

    Raises:
      ValueError: on inconsistent arguments, examples too long for the
        buckets, or no batch to serve.
    """
    if int(seed) != seed or seed < 0:
      raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    self._examples = bucketing.BucketedExamples(src, tgt, batching.buckets)
    if lines is not None and len(lines) != self._examples.num_examples:
      raise ValueError(f"{len(lines)} lines for {self._examples.num_examples} examples")
    self._lines = lines
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

  def _checked_state(self, state: Mapping[str, int]) -> tuple[int, int]:
    """Where `state` resumes; ValueError if malformed, of another seed, or past an epoch's end."""
    if _GENERATED_STATE_KEY in state:
      raise ValueError("iterator state is of a generated stream (train_data='generated'), "
                       "this iterator reads a split (train_data='split')")
    try:
      seed, epoch, position = (int(state[key]) for key in ("seed", "epoch", "position"))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(
          f"iterator state must hold int seed, epoch and position, got {state!r}") from e
    if seed != self._seed:
      raise ValueError(f"iterator state has seed {seed}, this iterator has seed {self._seed}")
    return _resumed_position(epoch, position, self.steps_per_epoch)

  def set_state(self, state: Mapping[str, int]) -> None:
    """Resumes at a state from `get_state` (of an iterator on the same data and settings)."""
    self._epoch, self._position = self._checked_state(state)

  def _served_lines(self, epoch: int, num_batches: int) -> list[str]:
    """The lines of the first `num_batches` batches of `epoch`, every process's rows."""
    orders, bucket_of_batch, start_of_batch = self._epoch_plan(epoch)
    layout, lines = self.layout, self._lines
    served = []
    for bucket, start in zip(bucket_of_batch[:num_batches].tolist(),
                             start_of_batch[:num_batches].tolist()):
      end = min(start + layout.batch_sizes[bucket], layout.bucket_counts[bucket])
      rows = self._examples.rows[bucket][orders[bucket][start:end]]
      served.extend(lines[row] for row in rows.tolist())
    return served

  def trained_lines(self, state: Mapping[str, int]) -> TrainedLines:
    """The lines this stream served before `state` (see `TrainedLines`).

    ValueError as `set_state`, or if the stream was built without its lines.
    """
    epoch, position = self._checked_state(state)
    if self._lines is None:
      raise ValueError("this stream was built without the text of its examples (lines=None)")
    return TrainedLines(
        epoch + (position > 0), self.num_examples,
        lambda e: self._served_lines(e, self.steps_per_epoch if e < epoch else position))


class GeneratedSource(Protocol):
  """Where a generated stream's examples come from (`example_sources.GeneratedExamples`).

  `lines(epoch, chunk)` must return the same lines for the same (epoch,
  chunk) on every call and every process (a seeded generator): chunk 0
  holds `examples_per_epoch` lines; `encode` makes their (src, tgt) ids.
  `examples_per_epoch` and `mix` (the shares of rows of each class, a
  `row_mix.RowMix`) go into the stream's state, so a resume with other lines
  is refused.
  """
  examples_per_epoch: int
  mix: row_mix.RowMix

  def lines(self, epoch: int, chunk: int) -> list[str]: ...

  def encode(self, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


def _made_in_subprocess(source: GeneratedSource, epoch: int,
                        chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """The ids of `source.lines(epoch, chunk)`, made in a worker process, sent back as bytes.

  Token ids fit in a byte (36 tokens), which quarters what crosses the pipe.
  """
  src, tgt = source.encode(source.lines(epoch, chunk))
  if max(int(src.max(initial=0)), int(tgt.max(initial=0))) < 256:
    return src.astype(np.uint8), tgt.astype(np.uint8)
  return src, tgt


class GeneratedTrainIterator:
  """Endless training batches of freshly generated examples: new examples every epoch.

  Epoch e's examples are `source.lines(e, chunk)`, encoded: chunk 0, and
  more chunks only in the rare epoch whose buckets do not fill
  `steps_per_epoch` batches (the full batches of epoch 0). An epoch's
  batches are the first `steps_per_epoch` that `TrainIterator` would serve
  for epoch e of these examples (same seed, buckets, sizes and slices).

  A resumed stream makes epoch e's examples again from (e, chunk) and serves
  the same batches as an uninterrupted one. The next epoch is made ahead: its
  examples in a worker process (`in_process=False`, the default: generating
  holds Python's lock for seconds, which in a thread would slow every
  training step by half), or in a background thread (`in_process=True`, for a
  source that cannot be sent to another process). The worker is spawned, so
  it imports the program's main module again: a script that builds this
  iterator must keep its work under `if __name__ == "__main__":` (main.py
  and the benchmarks do).
  """

  def __init__(
      self,
      source: GeneratedSource,
      *,
      batch_size: int,
      seed: int,
      batching: Batching = Batching(),
      in_process: bool = False):
    if source.examples_per_epoch < 1:
      raise ValueError(f"examples_per_epoch must be positive, got {source.examples_per_epoch}")
    self._source = source
    # Recorded in the state, so a resume with other lines is refused.
    self._examples_per_epoch = int(source.examples_per_epoch)
    self._mix_state = source.mix.state_fields()
    self._settings = dict(batch_size=batch_size, seed=seed, batching=batching)
    # Raises ValueError as TrainIterator does; its lines serve `trained_lines`.
    first = self._epoch_iterator(0, needed=0, keep_lines=True)
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

  def _epoch_iterator(self, epoch: int, *, needed: int, first_chunk=None,
                      keep_lines: bool = False) -> TrainIterator:
    """A TrainIterator over epoch `epoch`'s examples, at the start of that epoch.

    Takes chunks until the examples fill `needed` batches. `first_chunk`: a
    future of chunk 0's ids made in the worker process (None: make it here;
    later chunks, rarely needed, are made here). `keep_lines`: for `trained_lines`.
    """
    def chunk(number: int) -> tuple[list[str], np.ndarray, np.ndarray]:
      lines = self._source.lines(epoch, number)
      return (lines, *self._source.encode(lines))

    chunks = [chunk(0) if first_chunk is None else
              (None, *(ids.astype(np.int32) for ids in first_chunk.result()))]
    while True:
      src, tgt = (np.concatenate([c[k] for c in chunks]) if len(chunks) > 1 else chunks[0][k]
                  for k in (1, 2))
      lines = [line for c in chunks for line in c[0]] if keep_lines else None
      iterator = TrainIterator(src, tgt, lines=lines, **self._settings)
      if iterator.steps_per_epoch >= needed:
        iterator.set_state({"seed": self._settings["seed"], "epoch": epoch, "position": 0})
        return iterator
      if len(chunks) >= _MAX_CHUNKS:
        raise ValueError(f"epoch {epoch}: {len(chunks)} chunks of examples do not fill "
                         f"{needed} batches")
      chunks.append(chunk(len(chunks)))

  def _iterator_for(self, epoch: int) -> TrainIterator:
    """Epoch `epoch`'s iterator, made ahead when it was the next one."""
    if self._current[0] == epoch:
      return self._current[1]
    if self._next is not None and self._next[0] == epoch:
      iterator = self._next[1].result()
    else:
      iterator = self._epoch_iterator(epoch, needed=self.steps_per_epoch)
    self._current, self._next = (epoch, iterator), None
    return iterator

  def _make_ahead(self, epoch: int) -> None:
    if self._next is None or self._next[0] != epoch:
      first_chunk = (None if self._workers is None else
                     self._workers.submit(_made_in_subprocess, self._source, epoch, 0))
      self._next = (epoch, self._executor.submit(self._epoch_iterator, epoch,
                                                 needed=self.steps_per_epoch,
                                                 first_chunk=first_chunk))

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
             _GENERATED_STATE_KEY: self._examples_per_epoch}
    # Only the shares not 0: a state without them is of a stream of the data's own mix.
    return {**state, **self._mix_state}

  def _checked_state(self, state: Mapping[str, int]) -> tuple[int, int]:
    """Where `state` resumes; ValueError if malformed, of a split's stream or other settings."""
    try:
      seed, epoch, position, per_epoch = (int(state[key]) for key in (
          "seed", "epoch", "position", _GENERATED_STATE_KEY))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError("iterator state must hold int seed, epoch, position and "
                       f"generated_per_epoch (a generated stream), got {dict(state)!r}") from e
    if (seed, per_epoch) != (self._seed, self._examples_per_epoch):
      raise ValueError(f"iterator state has seed {seed} and {per_epoch} examples per epoch, "
                       f"this stream {self._seed} and {self._examples_per_epoch}")
    for key in row_mix.RowMix.state_keys():
      theirs, ours = float(state.get(key, 0.0)), self._mix_state.get(key, 0.0)
      if theirs != ours:
        raise ValueError(f"iterator state has {key}={theirs}, this stream {ours}")
    return _resumed_position(epoch, position, self.steps_per_epoch)

  def set_state(self, state: Mapping[str, int]) -> None:
    """Resumes at a state from `get_state` of an iterator with the same settings."""
    epoch, position = self._checked_state(state)
    iterator = self._iterator_for(epoch)
    iterator.set_state({"seed": self._seed, "epoch": epoch, "position": position})
    self._epoch, self._position = epoch, position

  def trained_lines(self, state: Mapping[str, int]) -> TrainedLines:
    """The lines this stream served before `state` (see `TrainedLines`).

    ValueError as `set_state`. Each epoch's lines, extra chunks included, are made
    again, but epoch 0 while the stream is in it: its constructor made them.
    """
    epoch, position = self._checked_state(state)

    def lines_of_epoch(e: int) -> list[str]:
      current_epoch, current = self._current
      iterator = (current if current_epoch == e and current._lines is not None else
                  self._epoch_iterator(e, needed=self.steps_per_epoch, keep_lines=True))
      return iterator._served_lines(e, self.steps_per_epoch if e < epoch else position)

    return TrainedLines(epoch + (position > 0), self.num_examples, lines_of_epoch)

  def close(self) -> None:
    """Stops making epochs ahead."""
    self._executor.shutdown(wait=False, cancel_futures=True)
    if self._workers is not None:
      self._workers.shutdown(wait=False, cancel_futures=True)
