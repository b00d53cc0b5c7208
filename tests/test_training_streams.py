"""Tests of the training streams: order, resume, process slices, and what a state trained on."""

import collections
import dataclasses
import json

import numpy as np
import pytest
from synthetic_batches import BUCKETS, assert_batches_equal, check_batch_content
from synthetic_batches import concat_batches, random_ids, synthetic, take

from polyflax import example_sources
from polyflax import generate
from polyflax import training_streams
from polyflax.bucketing import Batching
from polyflax.row_mix import RowMix
from polyflax.row_mix import RowMix
from polyflax.training_streams import GeneratedTrainIterator, TrainIterator
from polyflax.vocab import Vocab


def test_too_long_examples_are_refused():
  rng = np.random.default_rng(0)
  src = random_ids(rng, [5, 33], width=40)
  tgt = random_ids(rng, [5, 5], width=40)
  with pytest.raises(ValueError, match="example 1"):
    TrainIterator(src, tgt, batch_size=8, seed=0)


@pytest.mark.parametrize("batch_multiple, process_count", [(1, 1), (3, 1), (4, 2), (6, 4)])
def test_train_batch_sizes_are_multiples(batch_multiple, process_count):
  src, tgt = synthetic(3000)
  iterator = TrainIterator(
      src, tgt, batch_size=40, seed=1,
      batching=Batching(batch_multiple=batch_multiple, process_count=process_count))
  for batch in take(iterator, iterator.steps_per_epoch):
    global_size = batch["inputs"].shape[0] * process_count
    assert global_size % batch_multiple == 0 and global_size % 8 == 0


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_epoch_covers_every_example_at_most_once(drop_remainder):
  src, tgt = synthetic(1000)
  iterator = TrainIterator(src, tgt, batch_size=24, seed=3, drop_remainder=drop_remainder)
  for epoch in range(2):
    assert iterator.epoch == epoch and iterator.position == 0
    batches = take(iterator, iterator.steps_per_epoch)
    for batch in batches:
      check_batch_content(batch, src, tgt)
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
  src, tgt = synthetic(2000)
  iterator = TrainIterator(src, tgt, batch_size=16, seed=0)
  lengths = [b["inputs"].shape[1] for b in take(iterator, iterator.steps_per_epoch)]
  assert set(lengths) == set(BUCKETS)
  assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
  assert {length for _, length in iterator.shapes} == set(BUCKETS)


def test_same_seed_and_epoch_give_same_batches_other_epochs_differ():
  src, tgt = synthetic(600)
  first = TrainIterator(src, tgt, batch_size=16, seed=7)
  second = TrainIterator(src, tgt, batch_size=16, seed=7)
  other_seed = TrainIterator(src, tgt, batch_size=16, seed=8)
  steps = first.steps_per_epoch
  epochs = [take(first, steps) for _ in range(2)]
  assert_batches_equal(epochs[0], take(second, steps))
  assert_batches_equal(epochs[1], take(second, steps))
  order = [np.concatenate([b["index"] for b in epoch]) for epoch in epochs]
  assert not np.array_equal(order[0], order[1])
  other_order = np.concatenate([b["index"] for b in take(other_seed, steps)])
  assert not np.array_equal(order[0], other_order)


@pytest.mark.parametrize("stop_after", [0, 5, 14])  # the epoch has 15 steps here
def test_resume_from_state(stop_after):
  src, tgt = synthetic(700)
  original = TrainIterator(src, tgt, batch_size=32, seed=11)
  assert original.steps_per_epoch == 15
  take(original, original.steps_per_epoch + stop_after)
  state = original.get_state()
  assert state == {"seed": 11, "epoch": 1, "position": stop_after}
  state = json.loads(json.dumps(state))  # plain ints survive JSON
  resumed = TrainIterator(src, tgt, batch_size=32, seed=11)
  resumed.set_state(state)
  assert (resumed.epoch, resumed.position) == (1, stop_after)
  # Continue across the next epoch boundary.
  assert_batches_equal(take(resumed, 25), take(original, 25))
  assert resumed.get_state() == original.get_state()


def test_state_at_end_of_epoch_rolls_over():
  src, tgt = synthetic(300)
  iterator = TrainIterator(src, tgt, batch_size=16, seed=2)
  reference = TrainIterator(src, tgt, batch_size=16, seed=2)
  take(reference, reference.steps_per_epoch)
  assert reference.get_state() == {"seed": 2, "epoch": 1, "position": 0}
  iterator.set_state({"seed": 2, "epoch": 0, "position": iterator.steps_per_epoch})
  assert iterator.get_state() == reference.get_state()
  assert_batches_equal(take(iterator, 3), take(reference, 3))


@pytest.mark.parametrize("state", [
    {"seed": 3, "epoch": 0, "position": 0},
    {"seed": 2, "epoch": 0},
    {"seed": 2, "epoch": -1, "position": 0},
    {"seed": 2, "epoch": 0, "position": 10_000},
    {"seed": 2, "epoch": "x", "position": 0},
])
def test_set_state_rejects_bad_states(state):
  src, tgt = synthetic(300)
  iterator = TrainIterator(src, tgt, batch_size=16, seed=2)
  with pytest.raises(ValueError):
    iterator.set_state(state)


@pytest.mark.parametrize("process_count", [2, 4])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_process_slices_concatenate_to_single_process_batch(process_count, drop_remainder):
  src, tgt = synthetic(900)
  settings = dict(batch_size=32, seed=5, drop_remainder=drop_remainder)
  single = TrainIterator(src, tgt, batching=Batching(batch_multiple=process_count), **settings)
  shards = [
      TrainIterator(src, tgt, batching=Batching(batch_multiple=process_count, process_index=p,
                                                process_count=process_count), **settings)
      for p in range(process_count)]
  num_batches = single.steps_per_epoch + 3  # into the second epoch
  assert all(shard.steps_per_epoch == single.steps_per_epoch for shard in shards)
  per_process = [take(shard, num_batches) for shard in shards]
  for step, whole in enumerate(take(single, num_batches)):
    assert_batches_equal([concat_batches([batches[step] for batches in per_process])], [whole])


def test_empty_epoch_is_an_error():
  src, tgt = synthetic(20)
  with pytest.raises(ValueError, match="no full batch"):
    TrainIterator(src, tgt, batch_size=64, seed=0)
  iterator = TrainIterator(src, tgt, batch_size=64, seed=0, drop_remainder=False)
  assert iterator.steps_per_epoch > 0


def test_bad_arguments():
  src, tgt = synthetic(50)
  with pytest.raises(ValueError, match="process_index"):
    TrainIterator(src, tgt, batch_size=8, seed=0,
                  batching=Batching(process_index=2, process_count=2))
  with pytest.raises(ValueError, match="seed"):
    TrainIterator(src, tgt, batch_size=8, seed=-1)
  with pytest.raises(ValueError, match="different numbers"):
    TrainIterator(src, tgt[:-1], batch_size=8, seed=0)
  with pytest.raises(ValueError, match="49 lines for 50 examples"):
    TrainIterator(src, tgt, batch_size=8, seed=0, lines=["x=x"] * 49)


def test_stream_of_encoded_lines_serves_them_in_short_buckets():
  lines = ["(21-t)*(-6*t-4)=6*t**2-122*t-84", "3*x**2=3*x**2", "2*n*(n-9)=2*n**2-18*n"] * 20
  vocab = Vocab.default()
  factored, expanded = zip(*(line.split("=") for line in lines))
  iterator = TrainIterator(vocab.encode_batch(factored, 32), vocab.encode_batch(expanded, 32),
                           batch_size=8, seed=0)
  batch = next(iterator)
  assert batch["inputs"].shape[1] in (12, 16, 20)  # all these lines fit 20 tokens with eos


def test_constant_examples_serves_every_bucket_the_same_batch_size():
  src, tgt = synthetic(5000)
  iterator = TrainIterator(src, tgt, batch_size=64, seed=0, batching=Batching(constant="examples"))
  shapes = {batch["inputs"].shape for batch in take(iterator, iterator.steps_per_epoch)}
  assert {size for size, _ in shapes} == {64}
  assert {length for _, length in shapes} == set(BUCKETS)


# ---------------------------------------------------------------------------
# The generated stream.


@dataclasses.dataclass
class SyntheticSource:
  """A seeded source of synthetic ids that records which (epoch, chunk) it was asked for.

  Line "e/c/r" is row r of chunk c of epoch e; chunk 0 has `examples_per_epoch`
  rows, except `short_epochs`' (400: too few to fill an epoch's batches).
  """
  examples_per_epoch: int = 600
  mix: RowMix = RowMix()
  short_epochs: tuple = ()
  calls: list = dataclasses.field(default_factory=list)

  def lines(self, epoch, chunk):
    self.calls.append((epoch, chunk))
    count = 200 if chunk else 400 if epoch in self.short_epochs else self.examples_per_epoch
    return [f"{epoch}/{chunk}/{row}" for row in range(count)]

  def encode(self, lines):
    epoch, chunk, _ = lines[0].split("/")
    return synthetic(len(lines), seed=1000 * int(epoch) + int(chunk))


def _generated(process_index=0, process_count=1, source=None, **kwargs):
  source = source or SyntheticSource()
  settings = dict(batch_size=16, seed=3, in_process=True,
                  batching=Batching(process_index=process_index, process_count=process_count))
  settings.update(kwargs)
  return GeneratedTrainIterator(source, **settings), source.calls


def test_generated_stream_serves_new_examples_every_epoch_and_a_fixed_epoch_length():
  iterator, calls = _generated()
  steps = iterator.steps_per_epoch
  epochs = [take(iterator, steps) for _ in range(3)]
  assert iterator.get_state() == {"seed": 3, "epoch": 3, "position": 0,
                                  "generated_per_epoch": 600}
  for epoch, batches in enumerate(epochs):
    src, tgt = synthetic(600, seed=1000 * epoch)
    extra = [(e, c) for e, c in calls if e == epoch and c > 0]
    if extra:  # an epoch whose buckets fell short took another chunk
      more = [synthetic(200, seed=1000 * epoch + c) for _, c in extra]
      src = np.concatenate([src] + [m[0] for m in more])
      tgt = np.concatenate([tgt] + [m[1] for m in more])
    for batch in batches:
      check_batch_content(batch, src, tgt)
  first_rows = [set(batch["index"].tolist()) for batch in epochs[0]]
  assert epochs[0][0]["inputs"].tobytes() != epochs[1][0]["inputs"].tobytes()
  assert sum(len(rows) for rows in first_rows) == sum(
      int(batch["example_mask"].sum()) for batch in epochs[0])
  assert (0, 0) in calls and (1, 0) in calls and (2, 0) in calls
  iterator.close()


def test_an_epoch_short_of_examples_takes_more_chunks():
  iterator, calls = _generated(source=SyntheticSource(short_epochs=(1,)))
  take(iterator, 2 * iterator.steps_per_epoch)
  assert (1, 1) in calls and (0, 1) not in calls
  iterator.close()


@pytest.mark.parametrize("stop_after", [1, 7, 37, 38, 60])
def test_generated_stream_resumes_exactly(stop_after):
  straight, _ = _generated()
  expected = take(straight, 80)
  first, _ = _generated()
  take(first, stop_after)
  state = json.loads(json.dumps(first.get_state()))  # survives JSON, as in a checkpoint
  resumed, _ = _generated()
  resumed.set_state(state)
  assert_batches_equal(expected[stop_after:], take(resumed, 80 - stop_after))
  for iterator in (straight, first, resumed):
    iterator.close()


def test_generated_stream_process_slices_concatenate_to_single_process_batch():
  single, _ = _generated()
  halves = [_generated(process_index=p, process_count=2)[0] for p in range(2)]
  count = 2 * single.steps_per_epoch + 3
  for whole, *parts in zip(take(single, count), *(take(h, count) for h in halves)):
    assert_batches_equal([whole], [concat_batches(parts)])


def test_generated_and_split_states_are_not_interchangeable():
  generated, _ = _generated()
  src, tgt = synthetic(600)
  split = TrainIterator(src, tgt, batch_size=16, seed=3)
  with pytest.raises(ValueError, match="generated stream"):
    split.set_state(generated.get_state())
  with pytest.raises(ValueError, match="generated_per_epoch"):
    generated.set_state(split.get_state())
  other, _ = _generated(source=SyntheticSource(examples_per_epoch=500))
  with pytest.raises(ValueError, match="examples per epoch"):
    other.set_state(generated.get_state())
  generated.close()
  other.close()


def test_generated_stream_made_in_a_worker_process_serves_the_same_batches():
  source = example_sources.generated_examples(Vocab.default(), 32, seed=0,
                                              examples_per_epoch=400)
  here = GeneratedTrainIterator(source, batch_size=16, seed=3, in_process=True)
  worker = GeneratedTrainIterator(source, batch_size=16, seed=3)
  count = 3 * here.steps_per_epoch + 2  # epochs 1-3 are made ahead, in the worker
  assert_batches_equal(take(here, count), take(worker, count))
  here.close()
  worker.close()


def test_both_training_streams_are_training_streams_with_one_layout():
  src, tgt = synthetic(600)
  batching = Batching(constant="examples")
  split = TrainIterator(src, tgt, batch_size=16, seed=3, batching=batching)
  generated, _ = _generated(batching=batching)
  for stream in (split, generated):
    assert isinstance(stream, training_streams.TrainingStream)
  # Epoch 0 of the generated stream is these very examples: the same layout.
  assert split.layout == generated.layout
  assert split.steps_per_epoch == split.layout.num_batches == generated.steps_per_epoch
  assert split.layout.batch_sizes == (16,) * 4
  # The generated stream compiles every bucket: a later epoch may fill any.
  assert generated.shapes == [(16, length) for length in BUCKETS]
  generated.close()


def test_a_generated_stream_resumes_only_with_the_mix_it_was_drawn_with():
  vocab = Vocab.default()

  def stream(cancel_fraction, edge_fraction=0.0):
    return GeneratedTrainIterator(
        example_sources.generated_examples(
            vocab, 32, seed=0, examples_per_epoch=400,
            mix=RowMix(cancel_fraction=cancel_fraction, edge_fraction=edge_fraction)),
        batch_size=16, seed=3, in_process=True)

  mixed, plain = stream(0.2), stream(0.0)
  next(mixed)
  state = mixed.get_state()
  assert state["generated_cancel_fraction"] == 0.2
  assert "generated_cancel_fraction" not in plain.get_state()  # as states were before
  with pytest.raises(ValueError, match="generated_cancel_fraction=0.2, this stream 0.0"):
    plain.set_state(state)
  with pytest.raises(ValueError, match="generated_cancel_fraction=0.0, this stream 0.2"):
    stream(0.2).set_state(plain.get_state())
  with pytest.raises(ValueError, match="generated_edge_fraction=0.0, this stream 0.1"):
    stream(0.2, edge_fraction=0.1).set_state(state)
  again = stream(0.2)
  again.set_state(state)
  assert_batches_equal(take(again, 3), take(mixed, 3))
  for iterator in (mixed, plain, again):
    iterator.close()


# ---------------------------------------------------------------------------
# What a saved state has trained on.


def _served_by_epoch(stream, num_batches, line_of_row):
  """The lines of the next `num_batches` batches, per epoch: what training read."""
  served = collections.defaultdict(list)
  for _ in range(num_batches):
    epoch = stream.epoch
    batch = next(stream)
    served[epoch].extend(line_of_row(epoch, int(row)) for row in batch["index"] if row >= 0)
  return [served[epoch] for epoch in sorted(served)]


def test_a_split_stream_says_exactly_which_lines_a_state_trained_on(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("\n".join(generate.generate_lines(700, seed=5)) + "\n")
  src, tgt, pairs = example_sources.load_split(path, Vocab.default(), 32)
  lines = [f"{factored}={expanded}" for factored, expanded in pairs]
  settings = dict(batch_size=32, seed=11, lines=lines)
  stream = TrainIterator(src, tgt, **settings)
  served = _served_by_epoch(stream, stream.steps_per_epoch + 5, lambda _, row: lines[row])
  state = json.loads(json.dumps(stream.get_state()))
  # A new stream on the same split answers from the saved state, as evaluation asks.
  trained = TrainIterator(src, tgt, **settings).trained_lines(state)
  assert len(trained) == 2 and trained.examples_per_epoch == 700
  answer = list(trained)
  assert [collections.Counter(epoch) for epoch in answer] == [
      collections.Counter(epoch) for epoch in served]
  # Whole batches only: the remainders an epoch dropped, and the rest of epoch 1, are not in it.
  assert len(answer[0]) == sum(count // size * size for count, size in zip(
      stream.layout.bucket_counts, stream.layout.batch_sizes)) < 700
  assert len(answer[1]) < len(answer[0])
  assert set(lines) - set(answer[0]) - set(answer[1])
  # Every process's rows: a stream holding half of every batch answers the same.
  half = TrainIterator(src, tgt, batching=Batching(batch_multiple=2, process_index=1,
                                                   process_count=2), **settings)
  assert [sorted(epoch) for epoch in half.trained_lines(state)] == [
      sorted(epoch) for epoch in answer]
  assert list(stream.trained_lines({"seed": 11, "epoch": 0, "position": 0})) == []


def test_a_generated_stream_says_exactly_which_lines_a_state_trained_on():
  # Epoch 1 falls short of examples and takes another chunk, which its batches draw from.
  source = SyntheticSource(short_epochs=(1,))
  stream, _ = _generated(source=source)

  # Row r of an epoch's examples is line r of its chunks, in order.
  epoch_lines = [[line for chunk in range(5) for line in source.lines(epoch, chunk)]
                 for epoch in range(3)]
  served = _served_by_epoch(stream, 2 * stream.steps_per_epoch + 5,
                            lambda epoch, row: epoch_lines[epoch][row])
  assert any(line.startswith("1/1/") for line in served[1])
  state = json.loads(json.dumps(stream.get_state()))
  again, calls = _generated(source=SyntheticSource(short_epochs=(1,)))
  trained = again.trained_lines(state)
  assert len(trained) == 3 and trained.examples_per_epoch == 600
  answer = list(trained)
  # Epoch 0's lines, made by the constructor, are not made again for the answer.
  assert calls.count((0, 0)) == 1 and calls.count((1, 0)) == 1
  assert [collections.Counter(epoch) for epoch in answer] == [
      collections.Counter(epoch) for epoch in served]
  assert len(answer[2]) < len(answer[0]) < 600  # a partial epoch; remainders left out
  other_seed, _ = _generated(seed=4)
  with pytest.raises(ValueError, match="seed 3 and 600"):
    other_seed.trained_lines(state)
  for iterator in (stream, again, other_seed):
    iterator.close()


def test_a_stream_without_its_lines_cannot_say_what_it_served():
  src, tgt = synthetic(300)
  with pytest.raises(ValueError, match="without the text"):
    TrainIterator(src, tgt, batch_size=16, seed=2).trained_lines(
        {"seed": 2, "epoch": 1, "position": 0})
