"""The training loop's progress (polyflax/progress.py).

RunProgress: the loop's step, counters and clocks, to and from a checkpoint's
run record; the time estimate; and how many steps run ahead.
"""

import dataclasses

import numpy as np

from polyflax import progress, run_record


class Bar:
  """Counts finished steps, as the tqdm bar does."""
  n = 0

  def update(self, count):
    self.n += count


def record(**counters):
  fields = dict(model={"hidden_dim": 8}, iterator={"position": 40}, skipped_steps=3,
                command="test", versions={}, devices="1 x cpu", saved_at="2026-12-03T00:00:00",
                validation={"loss": 1.5}, train_seconds=12.5,
                validation_history=[{"step": 20, "train_seconds": 6.0, "exact_match": 0.25,
                                     "loss": 2.0},
                                    {"step": 40, "train_seconds": 12.5, "exact_match": 0.5,
                                     "loss": 1.5}])
  return run_record.RunRecord(**dict(fields, **counters))


def start(saved, step=40):
  return progress.RunProgress.from_record(saved, step=step, total_steps=100, bar=Bar(),
                                          backend="gpu", track_finite=True)


def step_sums():
  return {"loss_sum": np.float32(2.0), "token_count": np.float32(4.0), "steps": np.float32(1.0),
          "finite": np.float32(1.0), "grad_norm": np.float32(0.5)}


def test_every_counter_is_a_run_record_field_of_the_same_name():
  names = set(progress.RunProgress.from_record(None, step=0, total_steps=10, bar=Bar(),
                                               backend="cpu", track_finite=False).record_fields())
  record_names = {field.name for field in dataclasses.fields(run_record.RunRecord)}
  assert names == {"skipped_steps", "train_seconds", "validation_history", "validation",
                   "train_examples"}
  assert names <= record_names


def test_a_resumed_run_goes_on_from_the_record_and_saves_what_it_read():
  saved = record()
  run = start(saved)
  seconds = run.pause()
  assert seconds >= 12.5
  fields = run.record_fields()
  assert fields["skipped_steps"] == 3 and fields["train_seconds"] == seconds
  assert fields["validation_history"] == saved.validation_history
  # The validation of the checkpoint's step is its own, not the next save's.
  assert fields["validation"] is None
  # What a save writes is read back the same: a record of these fields resumes as this one did.
  again = run_record.RunRecord.from_json(dict(saved.to_json(), **fields))
  resumed = start(again)
  assert resumed.pause() >= seconds
  assert resumed.record_fields() == dict(fields, train_seconds=resumed.clock.seconds())
  # Copies: what the run counts on does not change the record it came from, or the reverse.
  run.validation_history.append({"step": 41})
  assert len(saved.validation_history) == 2 and len(fields["validation_history"]) == 2


def test_a_fresh_run_starts_from_nothing():
  run = start(None, step=0)
  run.pause()
  fields = run.record_fields()
  assert fields["skipped_steps"] == 0 and fields["validation_history"] == []
  assert fields["validation"] is None and fields["train_seconds"] >= 0.0


def test_a_validation_is_saved_with_its_step_only_and_the_clocks_move_together():
  run = start(record(), step=40)
  run.after_step(step_sums(), examples=64)
  assert (run.step, run.in_flight.finished) == (41, 41)  # the first step is waited for
  paused = run.pause()
  entry = run.validated({"loss": 1.25, "exact_match": 0.75})
  # The record is of a run from before examples were counted: unknown, and staying so.
  assert entry == {"step": 41, "train_seconds": paused, "examples": None, "exact_match": 0.75,
                   "loss": 1.25}
  assert run.validation_history[-1] == entry
  assert run.record_fields()["validation"] == {"loss": 1.25, "exact_match": 0.75}
  assert run.clock.seconds() == paused  # validation is not training time
  run.resume()
  assert run.before_step() is None
  run.after_step(step_sums(), examples=64)
  assert run.record_fields()["validation"] is None  # step 42 did not validate
  metrics = run.window_metrics()
  assert metrics["skipped_steps"] == 3 and run.in_flight.finished == 42
  assert run.validation == {"loss": 1.25, "exact_match": 0.75}  # what the loop returns
  assert run.train_examples is None and run.record_fields()["train_examples"] is None


def test_training_examples_are_counted_from_zero_and_resumed_exactly():
  run = start(None, step=0)
  assert run.train_examples == 0
  # Bucketed batches of tokens-constant size: each step adds its own rows.
  for examples in (96, 64, 128):
    run.after_step(step_sums(), examples=examples)
  entry = run.validated({"loss": 1.0})
  assert entry["examples"] == 288 and entry["step"] == 3
  fields = run.record_fields()
  assert fields["train_examples"] == 288
  saved = run_record.RunRecord.from_json(dict(record().to_json(), **fields))
  resumed = start(saved, step=3)
  resumed.after_step(step_sums(), examples=64)
  assert resumed.train_examples == 352 and saved.train_examples == 288


def test_a_batch_counts_its_real_rows_only():
  batch = {"example_mask": np.array([1, 1, 1, 0, 0], np.float32)}
  assert progress.batch_examples(batch, process_count=1) == 3
  assert progress.batch_examples({"example_mask": np.ones(8, np.float32)}, process_count=4) == 32
  # Every bucket's last batch padded: an epoch counts each example once, no padding row.
  from polyflax.training_streams import TrainIterator  # pylint: disable=import-outside-toplevel
  from synthetic_batches import synthetic  # pylint: disable=import-outside-toplevel
  src, tgt = synthetic(300, seed=1)
  padded = TrainIterator(src, tgt, batch_size=64, seed=0, drop_remainder=False)
  batches = [next(padded) for _ in range(padded.steps_per_epoch)]
  assert sum(len(batch["example_mask"]) for batch in batches) > 300
  assert sum(progress.batch_examples(batch, process_count=1) for batch in batches) == 300


def test_time_estimate_says_once_how_long_the_rest_of_a_cpu_run_takes():
  now = [0.0]
  clock = lambda: now[0]
  estimate = progress.TimeEstimate(5000, backend="cpu", skip_steps=5, measure_steps=10,
                                   clock=clock)
  said = []
  for step in range(1, 40):
    # The first steps of a session are slow (compilation, warming up): not timed.
    now[0] += 2.0 if step > 6 else 30.0
    said.append(estimate.observe(step))
  lines = [line for line in said if line]
  # Steps 1-5 skipped, the clock starts at step 6 and reads 10 steps later; then never again.
  assert len(lines) == 1 and said.index(lines[0]) == 15
  assert lines[0].startswith("note: no GPU or TPU: the remaining 4,984 steps take about 2.8 h "
                             "at the speed of steps 7-16 (2.00 s a step")
  assert "configs/cpu.py" in lines[0]
  for backend, total_steps in (("gpu", 5000), ("cpu", 1000)):  # an accelerator; under an hour
    quiet = progress.TimeEstimate(total_steps, backend=backend, skip_steps=5,
                                  measure_steps=10, clock=clock)
    assert not any(quiet.observe(step) for step in range(1, 40))


def test_a_step_is_handed_over_only_once_the_step_two_before_it_is_done():
  events = []

  class Step:  # the metric sums of a step, recording when they are waited for
    def __init__(self, number):
      self.number = number

    def block_until_ready(self):
      events.append(("done", self.number))
      return self

  class Bar:
    n = 0

    def update(self, count):
      self.n += count

  bar = Bar()
  in_flight = progress.InFlight(bar, first_step=10)
  for number in range(11, 16):
    in_flight.make_room()
    events.append(("hand over", number))
    in_flight.add(Step(number))
    assert in_flight.finished == 10 + bar.n == max(10, number - 2)
  assert events == [("hand over", 11), ("hand over", 12), ("done", 11), ("hand over", 13),
                    ("done", 12), ("hand over", 14), ("done", 13), ("hand over", 15)]
  in_flight.wait()
  assert in_flight.finished == 15 and bar.n == 5


def test_bucketed_batches_of_varying_rows_count_exactly_what_the_stream_served():
  from polyflax.bucketing import Batching  # pylint: disable=import-outside-toplevel
  from polyflax.training_streams import TrainIterator  # pylint: disable=import-outside-toplevel
  from synthetic_batches import synthetic  # pylint: disable=import-outside-toplevel
  src, tgt = synthetic(700, seed=3)
  lines = [f"line {row}" for row in range(len(src))]
  settings = dict(batch_size=32, seed=5, lines=lines)
  whole = TrainIterator(src, tgt, batching=Batching(batch_multiple=2), **settings)
  halves = [TrainIterator(src, tgt, batching=Batching(batch_multiple=2, process_index=p,
                                                      process_count=2), **settings)
            for p in range(2)]
  run = start(None, step=0)
  steps = whole.steps_per_epoch + 3  # into the second epoch
  counts = []
  for _ in range(steps):
    batch = next(whole)
    counts.append(progress.batch_examples(batch, process_count=1))
    # Each process's slice, times the processes, counts the global batch.
    assert {progress.batch_examples(next(half), process_count=2) for half in halves} == {
        counts[-1]}
    run.after_step(step_sums(), examples=counts[-1])
  assert len(set(counts)) > 1  # constant tokens: shorter buckets hold more rows
  served = sum(len(epoch) for epoch in whole.trained_lines(whole.get_state()))
  assert run.train_examples == sum(counts) == served
