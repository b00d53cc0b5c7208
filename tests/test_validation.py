"""Which steps a run validates at (polyflax/validation.py's ValidationSchedule)."""

import itertools

import ml_collections
import pytest

from polyflax import validation


def validated_steps(schedule, rows_of_steps, start_step=0, start_examples=0):
  """The steps that validate as batches of `rows_of_steps` rows are trained, from a start."""
  steps, examples = [], start_examples
  for step, rows in enumerate(rows_of_steps, start=start_step + 1):
    before, examples = examples, (None if examples is None else examples + rows)
    if schedule.due(step, before, examples):
      steps.append(step)
  return steps


def test_without_early_validations_the_step_schedule_is_unchanged():
  schedule = validation.ValidationSchedule(every_steps=12, total_steps=46)
  assert validated_steps(schedule, [64] * 46) == [12, 24, 36, 46]


def test_early_validations_come_at_the_first_step_reaching_each_multiple():
  schedule = validation.ValidationSchedule(every_steps=100, total_steps=300,
                                           early_every_examples=200, early_until_examples=1000)
  # 64 a step: 200 is reached at step 4 (256), 400 at 7 (448), 600 at 10 (640),
  # 800 at 13 (832), 1000 at 16 (1024); none after, until step 100's own.
  assert validated_steps(schedule, [64] * 120) == [4, 7, 10, 13, 16, 100]
  # A step landing on a multiple validates there, not a step later.
  assert validated_steps(schedule, [100] * 12) == [2, 4, 6, 8, 10]
  # A batch crossing two multiples at once validates once: 450 (200 and 400), 460,
  # 960 (600 and 800), 1060 (1000).
  assert validated_steps(schedule, [450, 10, 500, 100]) == [1, 3, 4]


def test_early_validations_are_at_the_same_examples_whatever_the_batch_size():
  schedule = validation.ValidationSchedule(every_steps=10**6, total_steps=10**6,
                                           early_every_examples=10_000,
                                           early_until_examples=50_000)
  for rows_of_steps in ([64] * 2000, [512] * 200, list(itertools.islice(
      itertools.cycle([96, 128, 160, 256]), 1000))):  # bucketed: rows vary by step
    counts = list(itertools.accumulate(rows_of_steps))
    at = [counts[step - 1] for step in validated_steps(schedule, rows_of_steps)]
    # Each validation is at the first count at or past its multiple.
    assert len(at) == 5
    for multiple, count in zip(range(10_000, 50_001, 10_000), at):
      assert count >= multiple and count - multiple < max(rows_of_steps)
      assert counts[counts.index(count) - 1] < multiple


def test_a_resumed_run_validates_where_an_uninterrupted_one_does():
  schedule = validation.ValidationSchedule(every_steps=12, total_steps=46,
                                           early_every_examples=200, early_until_examples=2000)
  rows = [64] * 46
  straight = validated_steps(schedule, rows)
  assert straight == [4, 7, 10, 12, 13, 16, 19, 22, 24, 25, 29, 32, 36, 46]
  resumed = [step for step in straight if step <= 23] + validated_steps(
      schedule, rows[23:], start_step=23, start_examples=23 * 64)
  assert resumed == straight
  # A run whose count is unknown (resumed from an older record) keeps the step schedule only.
  assert validated_steps(schedule, rows[23:], start_step=23, start_examples=None) == [24, 36, 46]


@pytest.mark.parametrize("interval, steps_per_epoch, every", [(0.5, 23, 12), (0.2, 10, 2),
                                                              (0.01, 23, 1)])
def test_the_schedule_of_a_config(interval, steps_per_epoch, every):
  config = ml_collections.ConfigDict({"val_check_interval": interval,
                                      "val_early_every_examples": 100,
                                      "val_early_until_examples": 900})
  schedule = validation.ValidationSchedule.from_config(config, steps_per_epoch=steps_per_epoch,
                                                       total_steps=50)
  assert schedule == validation.ValidationSchedule(every_steps=every, total_steps=50,
                                                   early_every_examples=100,
                                                   early_until_examples=900)
