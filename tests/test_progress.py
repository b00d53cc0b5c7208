"""RunProgress: the loop's step, counters and clocks, to and from a checkpoint's run record."""

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
  assert names == {"skipped_steps", "train_seconds", "validation_history", "validation"}
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
  assert entry == {"step": 41, "train_seconds": paused, "exact_match": 0.75, "loss": 1.25}
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
