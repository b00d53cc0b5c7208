"""Tests of the length-bucketed batch iterators."""

import itertools
import json

import numpy as np
import pytest

from polyflax import input_pipeline
from polyflax.input_pipeline import Batching
from polyflax.vocab import Vocab

EOS = 2
BUCKETS = (12, 16, 20, 32)


def _random_ids(rng, lengths, width=32):
  """Rows of random data ids (4..35) ending in eos, 0-padded; `lengths` count the eos."""
  ids = np.zeros((len(lengths), width), dtype=np.int32)
  for row, length in enumerate(lengths):
    ids[row, :length - 1] = rng.integers(4, 36, size=length - 1)
    ids[row, length - 1] = EOS
  return ids


def _synthetic(num_examples, seed=0):
  """Source and target ids with lengths spread over every default bucket."""
  rng = np.random.default_rng(seed)
  src_lengths = rng.integers(2, 31, size=num_examples)
  tgt_lengths = rng.integers(2, 25, size=num_examples)
  return _random_ids(rng, src_lengths), _random_ids(rng, tgt_lengths)


def _take(iterator, num_batches):
  return list(itertools.islice(iterator, num_batches))


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for batch_a, batch_b in zip(a, b):
    assert batch_a.keys() == batch_b.keys()
    for key in batch_a:
      np.testing.assert_array_equal(batch_a[key], batch_b[key], err_msg=key)


def _concat_batches(batches):
  return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


def _check_batch_content(batch, src, tgt, buckets=BUCKETS):
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
  longest = np.maximum(input_pipeline.example_lengths(src[rows]),
                       input_pipeline.example_lengths(tgt[rows]))
  smaller = [b for b in buckets if b < length]
  if smaller and rows.size:
    assert longest.min() > smaller[-1]


def test_example_lengths_count_up_to_last_token():
  ids = np.array([[5, 6, 2, 0], [5, 0, 2, 0], [0, 0, 0, 0], [5, 6, 7, 2]])
  np.testing.assert_array_equal(input_pipeline.example_lengths(ids), [3, 3, 0, 4])


def test_assign_buckets_picks_first_fitting_bucket():
  rng = np.random.default_rng(0)
  src = _random_ids(rng, [12, 13, 3, 30, 16])
  tgt = _random_ids(rng, [2, 2, 17, 2, 16])
  np.testing.assert_array_equal(input_pipeline.assign_buckets(src, tgt), [0, 1, 2, 3, 1])


def test_assign_buckets_rejects_too_long_examples():
  rng = np.random.default_rng(0)
  src = _random_ids(rng, [5, 33], width=40)
  tgt = _random_ids(rng, [5, 5], width=40)
  with pytest.raises(ValueError, match="example 1 has 33 tokens"):
    input_pipeline.assign_buckets(src, tgt)
  with pytest.raises(ValueError, match="example 1"):
    input_pipeline.TrainIterator(src, tgt, batch_size=8, seed=0)


def test_bucket_batch_sizes_keep_tokens_per_batch():
  assert input_pipeline.bucket_batch_sizes(256) == (680, 512, 408, 256)
  sizes = input_pipeline.bucket_batch_sizes(256, BUCKETS, batch_multiple=3, process_count=2)
  assert sizes == (672, 504, 408, 240)
  for size, length in zip(sizes, BUCKETS):
    assert size % 24 == 0
    assert size * length <= 256 * 32
  assert input_pipeline.bucket_batch_sizes(1, BUCKETS, batch_multiple=16) == (16,) * 4


@pytest.mark.parametrize("batch_multiple, process_count", [(1, 1), (3, 1), (4, 2), (6, 4)])
def test_train_batch_sizes_are_multiples(batch_multiple, process_count):
  src, tgt = _synthetic(3000)
  iterator = input_pipeline.TrainIterator(
      src, tgt, batch_size=40, seed=1,
      batching=Batching(batch_multiple=batch_multiple, process_count=process_count))
  for batch in _take(iterator, iterator.steps_per_epoch):
    global_size = batch["inputs"].shape[0] * process_count
    assert global_size % batch_multiple == 0 and global_size % 8 == 0


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_epoch_covers_every_example_at_most_once(drop_remainder):
  src, tgt = _synthetic(1000)
  iterator = input_pipeline.TrainIterator(
      src, tgt, batch_size=24, seed=3, drop_remainder=drop_remainder)
  for epoch in range(2):
    assert iterator.epoch == epoch and iterator.position == 0
    batches = _take(iterator, iterator.steps_per_epoch)
    for batch in batches:
      _check_batch_content(batch, src, tgt)
    seen = np.concatenate([b["index"][b["example_mask"] == 1] for b in batches])
    assert np.unique(seen).size == seen.size
    if drop_remainder:
      assert all(b["example_mask"].all() for b in batches)
      layout = iterator.layout
      expected = sum(n // b * b for n, b in zip(layout.bucket_counts, layout.batch_sizes))
      assert seen.size == expected
      assert seen.size > 1000 - sum(layout.batch_sizes)
    else:
      np.testing.assert_array_equal(np.sort(seen), np.arange(1000))
  assert iterator.epoch == 2


def test_batches_of_all_buckets_are_interleaved():
  src, tgt = _synthetic(2000)
  iterator = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=0)
  lengths = [b["inputs"].shape[1] for b in _take(iterator, iterator.steps_per_epoch)]
  assert set(lengths) == set(BUCKETS)
  assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
  assert {length for _, length in iterator.shapes} == set(BUCKETS)


def test_same_seed_and_epoch_give_same_batches_other_epochs_differ():
  src, tgt = _synthetic(600)
  first = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=7)
  second = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=7)
  other_seed = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=8)
  steps = first.steps_per_epoch
  epochs = [_take(first, steps) for _ in range(2)]
  _assert_batches_equal(epochs[0], _take(second, steps))
  _assert_batches_equal(epochs[1], _take(second, steps))
  order = [np.concatenate([b["index"] for b in epoch]) for epoch in epochs]
  assert not np.array_equal(order[0], order[1])
  other_order = np.concatenate([b["index"] for b in _take(other_seed, steps)])
  assert not np.array_equal(order[0], other_order)


@pytest.mark.parametrize("stop_after", [0, 5, 14])  # the epoch has 15 steps here
def test_resume_from_state(stop_after):
  src, tgt = _synthetic(700)
  original = input_pipeline.TrainIterator(src, tgt, batch_size=32, seed=11)
  assert original.steps_per_epoch == 15
  _take(original, original.steps_per_epoch + stop_after)
  state = original.get_state()
  assert state == {"seed": 11, "epoch": 1, "position": stop_after}
  state = json.loads(json.dumps(state))  # plain ints survive JSON
  resumed = input_pipeline.TrainIterator(src, tgt, batch_size=32, seed=11)
  resumed.set_state(state)
  assert (resumed.epoch, resumed.position) == (1, stop_after)
  # Continue across the next epoch boundary.
  _assert_batches_equal(_take(resumed, 25), _take(original, 25))
  assert resumed.get_state() == original.get_state()


def test_state_at_end_of_epoch_rolls_over():
  src, tgt = _synthetic(300)
  iterator = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=2)
  reference = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=2)
  _take(reference, reference.steps_per_epoch)
  assert reference.get_state() == {"seed": 2, "epoch": 1, "position": 0}
  iterator.set_state({"seed": 2, "epoch": 0, "position": iterator.steps_per_epoch})
  assert iterator.get_state() == reference.get_state()
  _assert_batches_equal(_take(iterator, 3), _take(reference, 3))


@pytest.mark.parametrize("state", [
    {"seed": 3, "epoch": 0, "position": 0},
    {"seed": 2, "epoch": 0},
    {"seed": 2, "epoch": -1, "position": 0},
    {"seed": 2, "epoch": 0, "position": 10_000},
    {"seed": 2, "epoch": "x", "position": 0},
])
def test_set_state_rejects_bad_states(state):
  src, tgt = _synthetic(300)
  iterator = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=2)
  with pytest.raises(ValueError):
    iterator.set_state(state)


@pytest.mark.parametrize("process_count", [2, 4])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_process_slices_concatenate_to_single_process_batch(process_count, drop_remainder):
  src, tgt = _synthetic(900)
  settings = dict(batch_size=32, seed=5, drop_remainder=drop_remainder)
  single = input_pipeline.TrainIterator(src, tgt, batching=Batching(batch_multiple=process_count),
                                        **settings)
  shards = [
      input_pipeline.TrainIterator(
          src, tgt, batching=Batching(batch_multiple=process_count, process_index=p,
                                      process_count=process_count), **settings)
      for p in range(process_count)]
  num_batches = single.steps_per_epoch + 3  # into the second epoch
  assert all(shard.steps_per_epoch == single.steps_per_epoch for shard in shards)
  per_process = [_take(shard, num_batches) for shard in shards]
  for step, whole in enumerate(_take(single, num_batches)):
    _assert_batches_equal([_concat_batches([batches[step] for batches in per_process])], [whole])


def test_empty_epoch_is_an_error():
  src, tgt = _synthetic(20)
  with pytest.raises(ValueError, match="no full batch"):
    input_pipeline.TrainIterator(src, tgt, batch_size=64, seed=0)
  iterator = input_pipeline.TrainIterator(src, tgt, batch_size=64, seed=0, drop_remainder=False)
  assert iterator.steps_per_epoch > 0


def test_bad_arguments():
  src, tgt = _synthetic(50)
  with pytest.raises(ValueError, match="process_index"):
    input_pipeline.TrainIterator(src, tgt, batch_size=8, seed=0,
                                 batching=Batching(process_index=2, process_count=2))
  with pytest.raises(ValueError, match="seed"):
    input_pipeline.TrainIterator(src, tgt, batch_size=8, seed=-1)
  with pytest.raises(ValueError, match="different numbers"):
    input_pipeline.TrainIterator(src, tgt[:-1], batch_size=8, seed=0)
  with pytest.raises(ValueError, match="buckets"):
    input_pipeline.TrainIterator(src, tgt, batch_size=8, seed=0,
                                 batching=Batching(buckets=(16, 12, 32)))


def test_eval_batches_count_each_example_once():
  src, tgt = _synthetic(1000)
  batches = Batching().eval_batches(src, tgt, batch_size=24)
  listed = list(batches)
  counts = Batching().count_per_bucket(src, tgt)
  assert len(listed) == len(batches) == Batching().layout(counts, 24).num_batches
  for batch in listed:
    _check_batch_content(batch, src, tgt)
  seen = np.concatenate([b["index"][b["example_mask"] == 1] for b in listed])
  np.testing.assert_array_equal(np.sort(seen), np.arange(1000))
  # Only the last batch of each bucket is padded, and only by what is missing.
  padding = sum(int((b["example_mask"] == 0).sum()) for b in listed)
  assert padding == sum(-n % size for n, size in zip(batches.layout.bucket_counts,
                                                     batches.layout.batch_sizes))
  for batch in listed:
    assert np.all(batch["index"][batch["example_mask"] == 0] == -1)
  # Deterministic: buckets in order of length, file order inside a bucket.
  _assert_batches_equal(listed, list(batches))
  lengths = [b["inputs"].shape[1] for b in listed]
  assert lengths == sorted(lengths)
  for length in set(lengths):
    rows = np.concatenate([b["index"] for b in listed if b["inputs"].shape[1] == length])
    rows = rows[rows >= 0]
    assert np.all(np.diff(rows) > 0)


@pytest.mark.parametrize("process_count", [2, 4])
def test_eval_process_slices_concatenate(process_count):
  src, tgt = _synthetic(500)
  single = list(Batching(batch_multiple=process_count).eval_batches(src, tgt, batch_size=16))
  shards = [
      list(Batching(batch_multiple=process_count, process_index=p,
                    process_count=process_count).eval_batches(src, tgt, batch_size=16))
      for p in range(process_count)]
  assert all(len(shard) == len(single) for shard in shards)
  for step, whole in enumerate(single):
    _assert_batches_equal([_concat_batches([shard[step] for shard in shards])], [whole])


def test_pipeline_on_encoded_lines():
  """From text through `encode_batch` to batches and back."""
  lines = ["(21-t)*(-6*t-4)=6*t**2-122*t-84", "-5*(14-4*tan(i))*tan(i)=20*tan(i)**2-70*tan(i)",
           "3*x**2=3*x**2", "(7-3*z)*(z+1)=-3*z**2+4*z+7", "2*n*(n-9)=2*n**2-18*n"] * 20
  vocab = Vocab.default()
  factored, expanded = zip(*(line.split("=") for line in lines))
  src, tgt = vocab.encode_batch(factored, 32), vocab.encode_batch(expanded, 32)
  decoded = {}
  for batch in Batching().eval_batches(src, tgt, batch_size=8):
    for row, index in enumerate(batch["index"]):
      if index >= 0:
        decoded[int(index)] = (vocab.decode(batch["inputs"][row]) + "=" +
                               vocab.decode(batch["targets"][row]))
  assert [decoded[i] for i in range(len(lines))] == lines
  iterator = input_pipeline.TrainIterator(src, tgt, batch_size=8, seed=0)
  batch = next(iterator)
  assert batch["inputs"].shape[1] in (12, 16, 20)  # all these lines fit 20 tokens with eos


_SPLIT_LINES = [
    "(21-t)*(-6*t-4)=6*t**2-122*t-84",
    "x*(x+1)=x**2+x",
    "x+1",  # no `=`
    "a=b=c",  # two
    "w**2=w**2",  # w is not a variable of the data
    "(-9*z-32)*(-8*z-31)=72*z**2+535*z+992",  # 19 + 1 tokens
    "-7*sin(i)**2=-7*sin(i)**2",
]
_GOOD = [1, 2, 6, 7]


@pytest.mark.parametrize("bad_line_number", [3, 4, 5])
def test_load_split_names_the_bad_line(tmp_path, bad_line_number):
  path = tmp_path / "split.txt"
  numbers = sorted(_GOOD + [bad_line_number])
  path.write_text("\n".join(_SPLIT_LINES[n - 1] for n in numbers))
  position = numbers.index(bad_line_number) + 1
  with pytest.raises(ValueError, match=rf"split\.txt:{position}:"):
    input_pipeline.load_split(path, Vocab.default(), 32)


def test_load_split_skips_bad_lines_and_says_how_many(tmp_path, capsys):
  path = tmp_path / "split.txt"
  path.write_text("\n".join(_SPLIT_LINES) + "\n")
  vocab = Vocab.default()
  src, tgt, pairs = input_pipeline.load_split(path, vocab, 32, skip_bad=True)
  assert pairs == [tuple(_SPLIT_LINES[n - 1].split("=")) for n in _GOOD]
  assert src.shape == tgt.shape == (4, 32) and src.dtype == tgt.dtype == np.int32
  np.testing.assert_array_equal(src, vocab.encode_batch([a for a, _ in pairs], 32))
  np.testing.assert_array_equal(tgt, vocab.encode_batch([b for _, b in pairs], 32))
  assert "skipped 3 malformed lines" in capsys.readouterr().err


def test_load_split_refuses_a_max_len_too_short_for_a_line(tmp_path):
  path = tmp_path / "split.txt"
  path.write_text("\n".join(_SPLIT_LINES[n - 1] for n in _GOOD) + "\n")
  with pytest.raises(ValueError, match=r"\(-9\*z-32\)\*\(-8\*z-31\)"):
    input_pipeline.load_split(path, Vocab.default(), 16)


# ---------------------------------------------------------------------------
# Constant examples per batch; the generated stream.


def test_constant_examples_gives_every_bucket_the_same_batch():
  assert input_pipeline.bucket_batch_sizes(512, constant="examples") == (512,) * 4
  assert input_pipeline.bucket_batch_sizes(100, BUCKETS, batch_multiple=3,
                                           constant="examples") == (96,) * 4
  src, tgt = _synthetic(5000)
  iterator = input_pipeline.TrainIterator(src, tgt, batch_size=64, seed=0,
                                          batching=Batching(constant="examples"))
  shapes = {batch["inputs"].shape for batch in _take(iterator, iterator.steps_per_epoch)}
  assert {size for size, _ in shapes} == {64}
  assert {length for _, length in shapes} == set(BUCKETS)
  with pytest.raises(ValueError, match="constant must be one of"):
    input_pipeline.bucket_batch_sizes(64, constant="bytes")


def _made_calls():
  """A seeded `make_examples` that records which (epoch, chunk) it was asked for."""
  calls = []

  def make_examples(epoch, chunk):
    calls.append((epoch, chunk))
    return _synthetic(600 if chunk == 0 else 200, seed=1000 * epoch + chunk)

  return make_examples, calls


def _generated(process_index=0, process_count=1, **kwargs):
  make_examples, calls = _made_calls()
  settings = dict(examples_per_epoch=600, batch_size=16, seed=3, in_process=True,
                  batching=Batching(process_index=process_index, process_count=process_count))
  settings.update(kwargs)
  return input_pipeline.GeneratedTrainIterator(make_examples, **settings), calls


def test_generated_stream_serves_new_examples_every_epoch_and_a_fixed_epoch_length():
  iterator, calls = _generated()
  steps = iterator.steps_per_epoch
  epochs = [_take(iterator, steps) for _ in range(3)]
  assert iterator.get_state() == {"seed": 3, "epoch": 3, "position": 0,
                                  "generated_per_epoch": 600}
  for epoch, batches in enumerate(epochs):
    src, tgt = _synthetic(600, seed=1000 * epoch)
    extra = [(e, c) for e, c in calls if e == epoch and c > 0]
    if extra:  # an epoch whose buckets fell short took another chunk
      more = [_synthetic(200, seed=1000 * epoch + c) for _, c in extra]
      src = np.concatenate([src] + [m[0] for m in more])
      tgt = np.concatenate([tgt] + [m[1] for m in more])
    for batch in batches:
      _check_batch_content(batch, src, tgt)
  first_rows = [set(batch["index"].tolist()) for batch in epochs[0]]
  assert epochs[0][0]["inputs"].tobytes() != epochs[1][0]["inputs"].tobytes()
  assert sum(len(rows) for rows in first_rows) == sum(
      int(batch["example_mask"].sum()) for batch in epochs[0])
  assert (0, 0) in calls and (1, 0) in calls and (2, 0) in calls
  iterator.close()


@pytest.mark.parametrize("stop_after", [1, 7, 37, 38, 60])
def test_generated_stream_resumes_exactly(stop_after):
  straight, _ = _generated()
  expected = _take(straight, 80)
  first, _ = _generated()
  _take(first, stop_after)
  state = json.loads(json.dumps(first.get_state()))  # survives JSON, as in a checkpoint
  resumed, _ = _generated()
  resumed.set_state(state)
  _assert_batches_equal(expected[stop_after:], _take(resumed, 80 - stop_after))
  for iterator in (straight, first, resumed):
    iterator.close()


def test_generated_stream_process_slices_concatenate_to_single_process_batch():
  single, _ = _generated()
  halves = [_generated(process_index=p, process_count=2)[0] for p in range(2)]
  count = 2 * single.steps_per_epoch + 3
  for whole, *parts in zip(_take(single, count), *(_take(h, count) for h in halves)):
    _assert_batches_equal([whole], [_concat_batches(parts)])


def test_generated_and_split_states_are_not_interchangeable():
  generated, _ = _generated()
  src, tgt = _synthetic(600)
  split = input_pipeline.TrainIterator(src, tgt, batch_size=16, seed=3)
  with pytest.raises(ValueError, match="generated stream"):
    split.set_state(generated.get_state())
  with pytest.raises(ValueError, match="generated_per_epoch"):
    generated.set_state(split.get_state())
  other, _ = _generated(examples_per_epoch=500)
  with pytest.raises(ValueError, match="examples per epoch"):
    other.set_state(generated.get_state())
  generated.close()
  other.close()


def test_generated_examples_are_seeded_encoded_lines():
  vocab = Vocab.default()
  make = input_pipeline.generated_examples(vocab, 32, seed=0, examples_per_epoch=50)
  src, tgt = make(0, 0)
  assert src.shape == tgt.shape == (50, 32)
  again, _ = make(0, 0)
  np.testing.assert_array_equal(src, again)
  assert make(1, 0)[0].tobytes() != src.tobytes()
  assert make(0, 1)[0].shape == (2, 32)  # later chunks: a twentieth of an epoch
  from polyflax import algebra  # pylint: disable=g-import-not-at-top
  for source, target in zip(vocab.decode_batch(src), vocab.decode_batch(tgt)):
    assert algebra.expand(source) == target


def test_generated_stream_made_in_a_worker_process_serves_the_same_batches():
  make_examples = input_pipeline.generated_examples(Vocab.default(), 32, seed=0,
                                                    examples_per_epoch=400)
  settings = dict(examples_per_epoch=400, batch_size=16, seed=3)
  here = input_pipeline.GeneratedTrainIterator(make_examples, in_process=True, **settings)
  worker = input_pipeline.GeneratedTrainIterator(make_examples, **settings)
  count = 3 * here.steps_per_epoch + 2  # epochs 1-3 are made ahead, in the worker
  _assert_batches_equal(_take(here, count), _take(worker, count))
  here.close()
  worker.close()


def test_both_training_streams_are_training_streams_with_one_layout():
  src, tgt = _synthetic(600)
  batching = Batching(constant="examples")
  split = batching.train_iterator(src, tgt, batch_size=16, seed=3)
  generated = batching.generated_iterator(_made_calls()[0], examples_per_epoch=600,
                                          batch_size=16, seed=3, in_process=True)
  for stream in (split, generated):
    assert isinstance(stream, input_pipeline.TrainingStream)
  # Epoch 0 of the generated stream is these very examples: the same layout.
  assert split.layout == generated.layout
  assert split.steps_per_epoch == split.layout.num_batches == generated.steps_per_epoch
  assert split.layout.batch_sizes == (16,) * 4
  # The generated stream compiles every bucket: a later epoch may fill any.
  assert generated.shapes == [(16, length) for length in BUCKETS]
  generated.close()


def test_batching_of_a_config_takes_its_buckets_constant_and_the_mesh():
  import jax  # pylint: disable=g-import-not-at-top
  from polyflax import config_files, sharding  # pylint: disable=g-import-not-at-top
  config = config_files.load(config_files.REPO / "configs" / "cpu.py")
  batching = input_pipeline.batching(config, sharding.make_mesh())
  assert batching == Batching(buckets=tuple(config.length_buckets), constant="examples",
                              batch_multiple=jax.device_count(), process_index=0,
                              process_count=1)
  assert input_pipeline.batching(config, sharding.make_mesh(), buckets=(32,)).buckets == (32,)
  with pytest.raises(ValueError, match="constant"):
    Batching(constant="bytes")


def test_generated_stream_with_cancel_fraction_is_seeded_and_holds_that_share():
  vocab = Vocab.default()
  make = input_pipeline.generated_examples(vocab, 32, seed=0, examples_per_epoch=4_000,
                                           cancel_fraction=0.2)
  again = input_pipeline.generated_examples(vocab, 32, seed=0, examples_per_epoch=4_000,
                                            cancel_fraction=0.2)
  src, tgt = make(1, 0)
  np.testing.assert_array_equal(src, again(1, 0)[0])
  np.testing.assert_array_equal(tgt, again(1, 0)[1])
  plain = input_pipeline.generated_examples(vocab, 32, seed=0, examples_per_epoch=4_000)
  plain_src, _ = plain(1, 0)
  assert src.tobytes() != plain_src.tobytes()
  expanded = vocab.decode_batch(tgt)
  from polyflax import algebra  # pylint: disable=g-import-not-at-top
  cancelling = 0
  for source, target in zip(vocab.decode_batch(src), expanded):
    assert algebra.expand(source) == target
    form = algebra.parse_factored(source)
    (a, b), (c, d) = form.first, form.second
    cancelling += b != 0 and d != 0 and a * d + b * c == 0
  assert abs(cancelling / len(expanded) - (0.2 + 0.8 * 0.0035)) < 0.02
  with pytest.raises(ValueError, match=r"cancel_fraction must be in \[0, 1\)"):
    input_pipeline.generated_examples(vocab, 32, seed=0, examples_per_epoch=10, cancel_fraction=1)


def test_a_generated_stream_resumes_only_with_the_mix_it_was_drawn_with():
  vocab = Vocab.default()
  settings = dict(examples_per_epoch=400, batch_size=16, seed=3, in_process=True)

  def stream(cancel_fraction):
    return input_pipeline.GeneratedTrainIterator(
        input_pipeline.generated_examples(vocab, 32, seed=0, examples_per_epoch=400,
                                          cancel_fraction=cancel_fraction), **settings)

  mixed, plain = stream(0.2), stream(0.0)
  next(mixed)
  state = mixed.get_state()
  assert state["generated_cancel_fraction"] == 0.2
  assert "generated_cancel_fraction" not in plain.get_state()  # as states were before
  with pytest.raises(ValueError, match="generated_cancel_fraction=0.2, this stream 0.0"):
    plain.set_state(state)
  with pytest.raises(ValueError, match="generated_cancel_fraction=0.0, this stream 0.2"):
    stream(0.2).set_state(plain.get_state())
  again = stream(0.2)
  again.set_state(state)
  _assert_batches_equal(_take(again, 3), _take(mixed, 3))
  for iterator in (mixed, plain, again):
    iterator.close()
