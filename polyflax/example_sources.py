"""Where examples come from: a split file, or lines generated afresh from seeds.

Reading a split (`load_split`): a text file of `factored=expanded` lines,
read and checked by `data.read_pairs`, becomes the two id arrays plus the
(factored, expanded) string pairs, row i of the arrays being pair i, so a
batch's `index` leads back to the text.

Generated lines (`GeneratedExamples`, made by `generated_examples`): the
examples of a generated training stream (`training_streams`), chunk by
chunk of every epoch, each chunk from its own seed derived from (seed,
epoch, chunk), so they can be made again, in any process, in any order.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Sequence

import numpy as np

from polyflax import data as data_lib
from polyflax import row_mix
from polyflax import vocab as vocab_lib

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


def generated_lines(seed: int, examples_per_epoch: int, epoch: int, chunk: int, *,
                    mix: row_mix.RowMix = row_mix.RowMix()) -> list[str]:
  """The `factored=expanded` lines of chunk `chunk` of epoch `epoch` of a generated stream.

  Chunk 0 has `examples_per_epoch` lines, later chunks a twentieth of that.
  Each (epoch, chunk) has its own generator seed, derived from (`seed`,
  epoch, chunk) and distinct from the seed that generates the fixed dataset
  whose validation and test splits a run is scored on; `mix` says what share
  of the lines are rows of each class (see `row_mix.mixed_lines`).
  """
  count = examples_per_epoch if chunk == 0 else max(1, examples_per_epoch // 20)
  chunk_seed = int(np.random.SeedSequence(
      [seed, _GENERATED_STREAM_TAG, epoch, chunk]).generate_state(1)[0])
  return row_mix.mixed_lines(count, chunk_seed, mix)


@dataclasses.dataclass(frozen=True)
class GeneratedExamples:
  """The source of a generated training stream: fresh lines for every (epoch, chunk), encoded.

  `lines(epoch, chunk)` are `generated_lines(seed, examples_per_epoch,
  epoch, chunk, mix=...)`; `encode` turns lines into the
  (src, tgt) id arrays a stream batches. A plain record, so it can run in
  another process (see `training_streams.GeneratedTrainIterator`).
  """
  vocab: vocab_lib.Vocab
  max_len: int
  seed: int
  examples_per_epoch: int
  mix: row_mix.RowMix = row_mix.RowMix()

  def lines(self, epoch: int, chunk: int) -> list[str]:
    return generated_lines(self.seed, self.examples_per_epoch, epoch, chunk, mix=self.mix)

  def encode(self, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """int32 [len(lines), max_len] source and target ids of `factored=expanded` lines."""
    pairs = [line.split("=") for line in lines]
    return (self.vocab.encode_batch([factored for factored, _ in pairs], self.max_len),
            self.vocab.encode_batch([expanded for _, expanded in pairs], self.max_len))


def generated_examples(vocab: vocab_lib.Vocab, max_len: int, seed: int,
                       examples_per_epoch: int, *,
                       mix: row_mix.RowMix = row_mix.RowMix()) -> GeneratedExamples:
  """Fresh lines for a generated stream, checked: see `GeneratedExamples`."""
  if examples_per_epoch < 1:
    raise ValueError(f"examples_per_epoch must be positive, got {examples_per_epoch}")
  return GeneratedExamples(vocab, max_len, seed, int(examples_per_epoch), mix)
