"""Choosing a model's confidence threshold, and the figures of answers by confidence."""

import math
import subprocess
import sys
import pathlib

import numpy as np
import pytest

from polyflax import calibration

REPO = pathlib.Path(__file__).resolve().parents[1]


def answers(*groups):
  """(confidences, correct) of groups (confidence, answers, wrong ones), shuffled."""
  confidences, correct = [], []
  for confidence, count, wrong in groups:
    confidences += [confidence] * count
    correct += [False] * wrong + [True] * (count - wrong)
  order = np.random.default_rng(0).permutation(len(confidences))
  return np.asarray(confidences)[order], np.asarray(correct)[order]


def test_the_threshold_is_where_the_share_wrong_falls_to_one_in_a_hundred():
  confidences, correct = answers((0.1, 10, 5), (0.5, 100, 3), (0.9, 1000, 5), (0.99, 10_000, 1))
  # 50%, 3%, then 0.5%: answers below 0.9 are flagged.
  assert calibration.choose_threshold(confidences, correct) == 0.9
  assert calibration.choose_threshold(confidences, correct, max_error_rate=0.04) == 0.5
  assert calibration.choose_threshold(confidences, correct, max_error_rate=0.001) == 0.99
  figures = calibration.flag_figures(confidences, correct, 0.9)
  assert figures == {"lines": 11_110, "wrong": 14, "flagged": 110, "flagged_share": 110 / 11_110,
                     "wrong_flagged": 8, "wrong_flagged_share": 8 / 14}


def test_a_share_of_exactly_one_in_a_hundred_is_not_flagged():
  confidences, correct = answers((0.2, 10, 10), (0.7, 100, 1), (0.8, 100, 0))
  assert calibration.choose_threshold(confidences, correct) == 0.7


def test_a_less_confident_stretch_that_was_right_is_pooled_with_the_wrong_one_above_it():
  # 0.3 was never wrong, 0.4 was wrong 5 times in 100: the share wrong cannot
  # fall as the confidence falls, so the two are one step of 5 in 200 (2.5%),
  # and both are flagged. Taken alone, 0.3 would end the flagged answers.
  confidences, correct = answers((0.3, 100, 0), (0.4, 100, 5), (0.95, 1000, 0))
  assert calibration.error_rate_steps(confidences, correct) == [(0.3, 0.025, 200),
                                                                (0.95, 0.0, 1000)]
  assert calibration.choose_threshold(confidences, correct) == 0.95


def test_the_fitted_share_never_rises_with_the_confidence():
  rng = np.random.default_rng(1)
  confidences = rng.random(2000) ** 0.2
  correct = rng.random(2000) < confidences  # more often right when more confident
  steps = calibration.error_rate_steps(confidences, correct)
  shares = [share for _, share, _ in steps]
  assert shares == sorted(shares, reverse=True)
  assert sum(count for _, _, count in steps) == 2000
  assert [low for low, _, _ in steps] == sorted(low for low, _, _ in steps)
  # Each step's share is the share of wrong answers among its answers.
  highs = [low for low, _, _ in steps[1:]] + [math.inf]
  for (low, share, count), high in zip(steps, highs):
    inside = (confidences >= low) & (confidences < high)
    assert inside.sum() == count
    assert share == pytest.approx(1 - correct[inside].mean())


def test_extremes_all_wrong_none_wrong_and_bad_input():
  assert calibration.choose_threshold([0.2, 0.5, 0.6], [False, False, False]) == 1.0
  # Nothing wrong: only an answer less sure than every one measured is flagged.
  assert calibration.choose_threshold([0.7, 0.9, 0.8], [True, True, True]) == 0.7
  with pytest.raises(ValueError, match="no answers"):
    calibration.choose_threshold([], [])
  with pytest.raises(ValueError, match="2 confidences but 1"):
    calibration.choose_threshold([0.5, 0.6], [True])
  with pytest.raises(ValueError, match="NaN"):
    calibration.choose_threshold([0.5, math.nan], [True, True])


def test_flags_need_a_threshold_and_a_confidence():
  assert calibration.is_flagged(0.5, 0.9)
  assert not calibration.is_flagged(0.9, 0.9)
  assert not calibration.is_flagged(0.5, None)
  assert not calibration.is_flagged(math.nan, 0.9)
  assert calibration.flag_figures([0.5, 0.95], [True, True], 0.9)["wrong_flagged_share"] is None


def test_bins_count_answers_and_wrong_ones_from_0_to_1():
  confidences = [0.2, 0.5, 0.95, 0.995, 0.9999, 1.0, 1.0, math.nan]
  correct = [False, True, False, True, True, True, False, False]
  assert calibration.bin_figures(confidences, correct) == [
      ("0-0.5", 1, 1), ("0.5-0.9", 1, 0), ("0.9-0.99", 1, 1), ("0.99-0.999", 1, 0),
      ("0.9999-1", 3, 1)]


def test_the_card_entry_and_reading_it_back():
  confidences, correct = answers((0.5, 100, 10), (0.99, 1000, 1))
  entry = calibration.card_entry(confidences, correct, data="inputs/val_set.txt", beam_size=1,
                                 length_penalty=0.6, calibrated_at="2026-12-03T10:00:00+00:00")
  assert entry["threshold"] == 0.99
  assert (entry["lines"], entry["wrong"], entry["flagged"], entry["wrong_flagged"]) == (
      1100, 11, 100, 10)
  assert entry["measure"] == calibration.MEASURE and entry["max_error_rate"] == 0.01
  assert calibration.threshold_of_card({calibration.CARD_KEY: entry}) == 0.99
  assert calibration.threshold_of_card({}) is None
  for bad in ({"threshold": 1.5}, {"threshold": "0.9"}, {}, 0.9):
    with pytest.raises(ValueError, match="no threshold in"):
      calibration.threshold_of_card({calibration.CARD_KEY: bad})


def test_calibration_needs_neither_jax_nor_the_model():
  code = ("import sys; from polyflax import calibration; "
          "print(sorted({'jax', 'polyflax.decode', 'polyflax.inference'} & set(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
  assert result.stdout.strip() == "[]"
