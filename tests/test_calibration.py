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


def logistic_answers(size, intercept, slope, seed=0, unsure_share=None):
  """Answers whose share wrong is logistic in log(1 - confidence), as `fit_error_rate` fits it.

  1 - confidence is log-uniform from 1e-6 to 0.89, or with `unsure_share`,
  from 1e-6 to 0.01 but for that share of the answers (a trained model's).
  """
  rng = np.random.default_rng(seed)
  doubt = 10.0 ** rng.uniform(-6, -0.05, size)  # 1 - confidence
  if unsure_share is not None:
    sure = rng.random(size) >= unsure_share
    doubt[sure] = 10.0 ** rng.uniform(-6, -2, sure.sum())
  wrong = rng.random(size) < 1 / (1 + np.exp(-(intercept + slope * np.log(doubt))))
  return 1 - doubt, ~wrong


def true_threshold(intercept, slope, max_error_rate=0.01):
  return 1 - math.exp((math.log(max_error_rate / (1 - max_error_rate)) - intercept) / slope)


@pytest.mark.parametrize("intercept, slope", [(1.0, 2.0), (-1.0, 1.0), (3.0, 1.5)])
def test_the_threshold_is_where_the_fitted_share_wrong_falls_to_one_in_a_hundred(intercept,
                                                                                 slope):
  confidences, correct = logistic_answers(200_000, intercept, slope)
  fit = calibration.fit_error_rate(confidences, correct)
  assert fit == pytest.approx((intercept, slope), rel=0.1, abs=0.1)
  threshold = calibration.choose_threshold(confidences, correct)
  assert threshold == pytest.approx(true_threshold(intercept, slope), abs=0.01)
  assert calibration.fitted_error_rate(threshold, fit) == pytest.approx(0.01, rel=1e-6)
  # Answers below it were wrong more than 1 time in 100, those above less.
  below, above = confidences < threshold, confidences >= threshold
  assert (~correct[below]).mean() > 0.01 > (~correct[above]).mean()
  # A stricter rate doubts more answers.
  assert calibration.choose_threshold(confidences, correct, max_error_rate=0.001) > threshold
  assert calibration.choose_threshold(confidences, correct, max_error_rate=0.1) < threshold


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_few_wrong_answers_among_many_sure_ones_still_find_the_threshold(seed):
  # As a well trained model's validation: about 15 wrong in 40,000, nearly
  # all answers sure. The curve learns from every wrong answer.
  confidences, correct = logistic_answers(40_000, 1.0, 2.0, seed=seed, unsure_share=0.01)
  assert 5 <= (~correct).sum() <= 40
  threshold = calibration.choose_threshold(confidences, correct)
  assert threshold == pytest.approx(true_threshold(1.0, 2.0), abs=0.06)
  assert calibration.flag_figures(confidences, correct, threshold)["flagged_share"] < 0.01


def test_wrong_answers_apart_from_right_ones_are_all_flagged_and_nothing_else():
  confidences, correct = answers((0.3, 10, 10), (0.5, 10, 10), (0.99, 1000, 0), (0.999, 1000, 0))
  threshold = calibration.choose_threshold(confidences, correct)
  assert 0.5 < threshold < 0.99


def test_extremes_all_wrong_none_wrong_no_trend_and_bad_input():
  assert calibration.choose_threshold([0.2, 0.5, 0.6], [False, False, False]) == 1.0
  # Nothing wrong: only an answer less sure than every one measured is flagged.
  assert calibration.choose_threshold([0.7, 0.9, 0.8], [True, True, True]) == 0.7
  # Wrong only when most confident: the confidence tells nothing of errors.
  confidences, correct = answers((0.5, 100, 0), (0.999, 100, 5))
  assert calibration.fit_error_rate(confidences, correct)[1] <= 0
  assert calibration.choose_threshold(confidences, correct) == 1.0  # 2.5% wrong in all
  confidences, correct = answers((0.5, 1000, 0), (0.999, 1000, 5))
  assert calibration.choose_threshold(confidences, correct) == 0.5  # 0.25% wrong in all
  with pytest.raises(ValueError, match="no answers"):
    calibration.choose_threshold([], [])
  with pytest.raises(ValueError, match="2 confidences but 1"):
    calibration.choose_threshold([0.5, 0.6], [True])
  with pytest.raises(ValueError, match="NaN"):
    calibration.choose_threshold([0.5, math.nan], [True, True])


def test_flag_figures_count_what_a_threshold_flags():
  confidences, correct = answers((0.1, 10, 5), (0.5, 100, 3), (0.9, 1000, 5), (0.99, 10_000, 1))
  figures = calibration.flag_figures(confidences, correct, 0.9)
  assert figures == {"lines": 11_110, "wrong": 14, "flagged": 110, "flagged_share": 110 / 11_110,
                     "wrong_flagged": 8, "wrong_flagged_share": 8 / 14}


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
  confidences, correct = answers((0.5, 100, 10), (0.9, 1000, 5), (0.999, 1000, 1))
  entry = calibration.card_entry(confidences, correct, data="inputs/val_set.txt", beam_size=1,
                                 length_penalty=0.6, calibrated_at="2026-12-03T10:00:00+00:00")
  threshold = calibration.choose_threshold(confidences, correct)
  # 10% wrong at 0.5, 0.5% at 0.9: 1% falls between.
  assert 0.5 < threshold < 0.9 and entry["threshold"] == threshold
  assert (entry["lines"], entry["wrong"], entry["flagged"], entry["wrong_flagged"]) == (
      2100, 16, 100, 10)
  assert entry["measure"] == calibration.MEASURE and entry["max_error_rate"] == 0.01
  assert (entry["fit"]["intercept"], entry["fit"]["slope"]) == calibration.fit_error_rate(
      confidences, correct)
  assert calibration.threshold_of_card({calibration.CARD_KEY: entry}) == threshold
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
