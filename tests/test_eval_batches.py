"""Tests of the evaluation batches: every example once, in a fixed order."""

import numpy as np
import pytest
from synthetic_batches import assert_batches_equal, check_batch_content, concat_batches
from synthetic_batches import synthetic

from polyflax.bucketing import Batching
from polyflax.eval_batches import EvalBatches
from polyflax.vocab import Vocab


def test_eval_batches_count_each_example_once():
  src, tgt = synthetic(1000)
  batches = EvalBatches(src, tgt, batch_size=24)
  listed = list(batches)
  counts = Batching().count_per_bucket(src, tgt)
  assert len(listed) == len(batches) == Batching().layout(counts, 24).num_batches
  assert batches.num_examples == 1000
  for batch in listed:
    check_batch_content(batch, src, tgt)
  seen = np.concatenate([b["index"][b["example_mask"] == 1] for b in listed])
  np.testing.assert_array_equal(np.sort(seen), np.arange(1000))
  # Only the last batch of each bucket is padded, and only by what is missing.
  padding = sum(int((b["example_mask"] == 0).sum()) for b in listed)
  assert padding == sum(-n % size for n, size in zip(batches.layout.bucket_counts,
                                                     batches.layout.batch_sizes))
  for batch in listed:
    assert np.all(batch["index"][batch["example_mask"] == 0] == -1)
  # Deterministic: buckets in order of length, input order inside a bucket.
  assert_batches_equal(listed, list(batches))
  lengths = [b["inputs"].shape[1] for b in listed]
  assert lengths == sorted(lengths)
  for length in set(lengths):
    rows = np.concatenate([b["index"] for b in listed if b["inputs"].shape[1] == length])
    rows = rows[rows >= 0]
    assert np.all(np.diff(rows) > 0)


@pytest.mark.parametrize("process_count", [2, 4])
def test_eval_process_slices_concatenate(process_count):
  src, tgt = synthetic(500)
  single = list(EvalBatches(src, tgt, batch_size=16,
                            batching=Batching(batch_multiple=process_count)))
  shards = [
      list(EvalBatches(src, tgt, batch_size=16,
                       batching=Batching(batch_multiple=process_count, process_index=p,
                                         process_count=process_count)))
      for p in range(process_count)]
  assert all(len(shard) == len(single) for shard in shards)
  for step, whole in enumerate(single):
    assert_batches_equal([concat_batches([shard[step] for shard in shards])], [whole])


def test_eval_batches_of_encoded_lines_decode_back_to_them():
  """From text through `encode_batch` to batches and back."""
  lines = ["(21-t)*(-6*t-4)=6*t**2-122*t-84", "-5*(14-4*tan(i))*tan(i)=20*tan(i)**2-70*tan(i)",
           "3*x**2=3*x**2", "(7-3*z)*(z+1)=-3*z**2+4*z+7", "2*n*(n-9)=2*n**2-18*n"] * 20
  vocab = Vocab.default()
  factored, expanded = zip(*(line.split("=") for line in lines))
  src, tgt = vocab.encode_batch(factored, 32), vocab.encode_batch(expanded, 32)
  decoded = {}
  for batch in EvalBatches(src, tgt, batch_size=8):
    for row, index in enumerate(batch["index"]):
      if index >= 0:
        decoded[int(index)] = (vocab.decode(batch["inputs"][row]) + "=" +
                               vocab.decode(batch["targets"][row]))
  assert [decoded[i] for i in range(len(lines))] == lines
