"""Tests of the bucket arithmetic: lengths, buckets, batch sizes, layouts."""

import numpy as np
import pytest
from synthetic_batches import BUCKETS, random_ids, synthetic

from polyflax import bucketing
from polyflax.bucketing import Batching


def test_example_lengths_count_up_to_last_token():
  ids = np.array([[5, 6, 2, 0], [5, 0, 2, 0], [0, 0, 0, 0], [5, 6, 7, 2]])
  np.testing.assert_array_equal(bucketing.example_lengths(ids), [3, 3, 0, 4])


def test_assign_buckets_picks_first_fitting_bucket():
  rng = np.random.default_rng(0)
  src = random_ids(rng, [12, 13, 3, 30, 16])
  tgt = random_ids(rng, [2, 2, 17, 2, 16])
  np.testing.assert_array_equal(bucketing.assign_buckets(src, tgt), [0, 1, 2, 3, 1])


def test_assign_buckets_rejects_too_long_examples():
  rng = np.random.default_rng(0)
  src = random_ids(rng, [5, 33], width=40)
  tgt = random_ids(rng, [5, 5], width=40)
  with pytest.raises(ValueError, match="example 1 has 33 tokens"):
    bucketing.assign_buckets(src, tgt)


def test_bucket_batch_sizes_keep_tokens_per_batch():
  assert bucketing.bucket_batch_sizes(256) == (680, 512, 408, 256)
  sizes = bucketing.bucket_batch_sizes(256, BUCKETS, batch_multiple=3, process_count=2)
  assert sizes == (672, 504, 408, 240)
  for size, length in zip(sizes, BUCKETS):
    assert size % 24 == 0
    assert size * length <= 256 * 32
  assert bucketing.bucket_batch_sizes(1, BUCKETS, batch_multiple=16) == (16,) * 4


def test_constant_examples_gives_every_bucket_the_same_batch_size():
  assert bucketing.bucket_batch_sizes(512, constant="examples") == (512,) * 4
  assert bucketing.bucket_batch_sizes(100, BUCKETS, batch_multiple=3,
                                      constant="examples") == (96,) * 4
  with pytest.raises(ValueError, match="constant must be one of"):
    bucketing.bucket_batch_sizes(64, constant="bytes")


def test_layout_counts_batches_with_and_without_the_remainder():
  batching = Batching(constant="examples")
  counts = (100, 0, 17, 16)
  padded = batching.layout(counts, 16)  # evaluation: tokens constant, remainders padded
  assert padded.batch_sizes == bucketing.bucket_batch_sizes(16)
  assert padded.batches_per_bucket == tuple(-(-n // size) for n, size in
                                            zip(counts, padded.batch_sizes))
  training = batching.layout(counts, 16, training=True, drop_remainder=True)
  assert training.batch_sizes == (16,) * 4
  assert training.batches_per_bucket == (6, 0, 1, 1) and training.num_batches == 8
  assert training.shapes == [(16, 12), (16, 20), (16, 32)]  # an empty bucket compiles nothing
  sliced = Batching(constant="examples", batch_multiple=2, process_index=1,
                    process_count=2).layout(counts, 16, training=True)
  assert sliced.local_batch_sizes == (8,) * 4


def test_count_per_bucket_counts_what_assign_buckets_assigns():
  src, tgt = synthetic(500)
  counts = Batching().count_per_bucket(src, tgt)
  np.testing.assert_array_equal(counts, np.bincount(bucketing.assign_buckets(src, tgt),
                                                    minlength=4))
  assert sum(counts) == 500


def test_padding_batch_is_masked_padding_of_the_shape():
  batch = bucketing.padding_batch(8, 12)
  assert batch["inputs"].shape == batch["targets"].shape == (8, 12)
  assert not batch["inputs"].any() and not batch["example_mask"].any()
  assert (batch["index"] == -1).all()


def test_bad_batchings():
  with pytest.raises(ValueError, match="constant"):
    Batching(constant="bytes")
  with pytest.raises(ValueError, match="process_index"):
    Batching(process_index=2, process_count=2)
  with pytest.raises(ValueError, match="buckets"):
    Batching(buckets=(16, 12, 32))
  with pytest.raises(ValueError, match="batch_multiple"):
    Batching(batch_multiple=0)
