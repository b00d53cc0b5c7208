"""Synthetic token ids shaped like the data, and checks of the batches made from them."""

import itertools

import numpy as np

from polyflax import bucketing

EOS = 2
BUCKETS = (12, 16, 20, 32)


def random_ids(rng, lengths, width=32):
  """Rows of random data ids (4..35) ending in eos, 0-padded; `lengths` count the eos."""
  ids = np.zeros((len(lengths), width), dtype=np.int32)
  for row, length in enumerate(lengths):
    ids[row, :length - 1] = rng.integers(4, 36, size=length - 1)
    ids[row, length - 1] = EOS
  return ids


def synthetic(num_examples, seed=0):
  """Source and target ids with lengths spread over every default bucket."""
  rng = np.random.default_rng(seed)
  src_lengths = rng.integers(2, 31, size=num_examples)
  tgt_lengths = rng.integers(2, 25, size=num_examples)
  return random_ids(rng, src_lengths), random_ids(rng, tgt_lengths)


def take(iterator, num_batches):
  return list(itertools.islice(iterator, num_batches))


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for batch_a, batch_b in zip(a, b):
    assert batch_a.keys() == batch_b.keys()
    for key in batch_a:
      np.testing.assert_array_equal(batch_a[key], batch_b[key], err_msg=key)


def concat_batches(batches):
  return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


def check_batch_content(batch, src, tgt, buckets=BUCKETS):
  """Rows hold their examples, padded to a bucket length; padding rows are empty."""
  assert batch["inputs"].dtype == np.int32 and batch["targets"].dtype == np.int32
  assert batch["example_mask"].dtype == np.float32 and batch["index"].dtype == np.int32
  size, length = batch["inputs"].shape
  assert batch["targets"].shape == (size, length)
  assert batch["example_mask"].shape == batch["index"].shape == (size,)
  assert length in buckets
  real = batch["example_mask"] == 1
  assert np.all(real | (batch["example_mask"] == 0))
  np.testing.assert_array_equal(real, batch["index"] >= 0)
  rows = batch["index"][real]
  np.testing.assert_array_equal(batch["inputs"][real], src[rows, :length])
  np.testing.assert_array_equal(batch["targets"][real], tgt[rows, :length])
  assert not src[rows, length:].any() and not tgt[rows, length:].any()
  assert not batch["inputs"][~real].any() and not batch["targets"][~real].any()
  # The bucket is the first one that fits the longer side.
  longest = np.maximum(bucketing.example_lengths(src[rows]),
                       bucketing.example_lengths(tgt[rows]))
  smaller = [b for b in buckets if b < length]
  if smaller and rows.size:
    assert longest.min() > smaller[-1]
