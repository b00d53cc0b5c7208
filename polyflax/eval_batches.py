"""Evaluation batches: every example exactly once, in a fixed order.

Evaluation order (`EvalBatches`). Buckets in order of length, examples in
input order within each bucket, the last batch of each bucket padded with
zero rows whose example_mask is 0 and index -1, so every example appears
exactly once; `len()` gives the number of batches, equal on every process.
Batch sizes keep the tokens per batch about constant; batches and buckets:
see `bucketing`. Validation during training and decoding both read these.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from polyflax import bucketing
from polyflax.bucketing import Batch, Batching


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
    self._examples = bucketing.BucketedExamples(src, tgt, batching.buckets)
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
