"""How far an answer can be trusted: a model's confidence threshold, and figures by confidence.

Decoding gives every answer a confidence (`decode.py`: the lowest
probability the model gave any token it chose). A model's threshold is
calibrated on lines it never trained on, the generated validation split
(never on real lines): `choose_threshold` fits the share of wrong answers as
a logistic function of log(1 - confidence) (`fit_error_rate`) and returns
the confidence at which the fitted share falls to `MAX_ERROR_RATE`. An
answer whose confidence is below the threshold is flagged (`is_flagged`):
answers that unsure are wrong more than 1 time in 100. Export stores the threshold and what it was measured on
in the model card (`card_entry`; `threshold_of_card` reads it back).

Everything here is pure Python and numpy over (confidence, correct) lists:
nothing decodes, reads files or needs jax.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

# The share of wrong answers above which an answer is flagged.
MAX_ERROR_RATE = 0.01
# What the confidence is (recorded in the card beside the threshold).
MEASURE = "lowest probability of a chosen token"
# The smallest 1 - confidence the fit tells apart (float32 confidences round
# to 1 within about 6e-8 of it).
MIN_DOUBT = 1e-7
# The ridge penalty of the logistic fit: negligible beside thousands of
# answers, it keeps the fit finite when the data alone would not.
RIDGE = 1e-3
# Edges of the confidence bins of `bin_figures`; the bins are [0, 0.5),
# [0.5, 0.9), ..., [0.9999, 1]: a confident model's answers crowd near 1.
BIN_EDGES = (0.5, 0.9, 0.99, 0.999, 0.9999)
# The model card's key of `card_entry`.
CARD_KEY = "calibration"


def _features(confidences: np.ndarray) -> np.ndarray:
  """log(1 - confidence), with 1 - confidence at least `MIN_DOUBT` (float32 rounds to 1)."""
  return np.log(np.maximum(1.0 - confidences, MIN_DOUBT))


def _checked(confidences: Sequence[float],
             correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
  """(confidences as float64, wrong as bool), checked to pair up and hold no NaN."""
  confidences = np.asarray(confidences, np.float64)
  wrong = ~np.asarray(correct, bool)
  if confidences.shape != wrong.shape:
    raise ValueError(f"{confidences.size} confidences but {wrong.size} correct flags")
  if np.isnan(confidences).any():
    raise ValueError("a confidence is NaN")
  return confidences, wrong


def fit_error_rate(confidences: Sequence[float], correct: Sequence[bool]) -> tuple[float, float]:
  """(intercept, slope) of the share wrong as a logistic function of log(1 - confidence).

  The maximum-likelihood fit (Newton's method), with a slight ridge penalty
  (`RIDGE`) that keeps it finite when the confidence separates the wrong
  answers from the right ones exactly, or when none or all are wrong.
  """
  confidences, wrong = _checked(confidences, correct)
  features = np.stack([np.ones_like(confidences), _features(confidences)], axis=1)
  coefficients = np.zeros(2)
  for _ in range(100):
    fitted = 1.0 / (1.0 + np.exp(-np.clip(features @ coefficients, -500, 500)))
    gradient = features.T @ (wrong - fitted) - RIDGE * coefficients
    hessian = (features.T @ (features * (fitted * (1 - fitted))[:, None])
               + RIDGE * np.eye(2))
    step = np.linalg.solve(hessian, gradient)
    coefficients += step
    if np.abs(step).max() < 1e-9:
      break
  return float(coefficients[0]), float(coefficients[1])


def fitted_error_rate(confidence: float, fit: tuple[float, float]) -> float:
  """The share wrong that `fit` (of `fit_error_rate`) gives answers of `confidence`."""
  intercept, slope = fit
  z = intercept + slope * float(_features(np.asarray(confidence, np.float64)))
  return 1.0 / (1.0 + math.exp(-min(max(z, -500.0), 500.0)))


def choose_threshold(confidences: Sequence[float], correct: Sequence[bool],
                     max_error_rate: float = MAX_ERROR_RATE) -> float:
  """The confidence below which the fitted share of wrong answers exceeds `max_error_rate`.

  The share wrong is fitted as a logistic function of log(1 - confidence)
  (`fit_error_rate`): a smooth curve learns from every wrong answer, where
  a step function would put the threshold at the most confident wrong
  answer of the sample. Without a wrong answer, the lowest confidence
  measured (only less sure answers are flagged); when the fit does not fall
  as the confidence rises (every answer wrong, or the confidence tells
  nothing), 1.0 if the share wrong exceeds `max_error_rate` (every answer
  short of certain is flagged), else the lowest confidence measured.

  Raises:
    ValueError: for no answers, lengths that differ, or a NaN confidence.
  """
  confidences, wrong = _checked(confidences, correct)
  if not confidences.size:
    raise ValueError("no answers to calibrate on")
  if not wrong.any():
    return float(confidences.min())
  intercept, slope = fit_error_rate(confidences, ~wrong)
  if wrong.all() or slope <= 0:
    return 1.0 if wrong.mean() > max_error_rate else float(confidences.min())
  # intercept + slope * log(1 - t) = logit(max_error_rate)
  log_doubt = (math.log(max_error_rate / (1 - max_error_rate)) - intercept) / slope
  return float(min(max(1.0 - math.exp(min(log_doubt, 0.0)), 0.0), 1.0))


def is_flagged(confidence: float, threshold: float | None) -> bool:
  """Whether an answer of `confidence` is doubted (never without a threshold or a confidence)."""
  return threshold is not None and not math.isnan(confidence) and confidence < threshold


def flag_figures(confidences: Sequence[float], correct: Sequence[bool],
                 threshold: float) -> dict[str, Any]:
  """What `threshold` flags of a decoded set.

  Returns:
    `lines`, `wrong`; `flagged` (answers below the threshold) and
    `flagged_share` (of all answers); `wrong_flagged` and
    `wrong_flagged_share` (of the wrong answers; None when none is wrong).
  """
  confidences = np.asarray(confidences, np.float64)
  correct = np.asarray(correct, bool)
  flagged = confidences < threshold
  wrong = int((~correct).sum())
  wrong_flagged = int((flagged & ~correct).sum())
  return {"lines": int(correct.size), "wrong": wrong, "flagged": int(flagged.sum()),
          "flagged_share": float(flagged.mean()) if correct.size else 0.0,
          "wrong_flagged": wrong_flagged,
          "wrong_flagged_share": wrong_flagged / wrong if wrong else None}


def bin_label(index: int) -> str:
  """The name of confidence bin `index` of `BIN_EDGES`: '0-0.5', ..., '0.9999-1'."""
  edges = (0,) + BIN_EDGES + (1,)
  return f"{edges[index]}-{edges[index + 1]}"


def bin_figures(confidences: Sequence[float],
                correct: Sequence[bool]) -> list[tuple[str, int, int]]:
  """(bin label, answers, wrong answers) of each confidence bin that holds an answer.

  A NaN confidence (a decoder that gives none) falls in no bin.
  """
  confidences = np.asarray(confidences, np.float64)
  correct = np.asarray(correct, bool)
  known = ~np.isnan(confidences)
  indices = np.searchsorted(np.asarray(BIN_EDGES), confidences[known], side="right")
  rows = []
  for index in range(len(BIN_EDGES) + 1):
    in_bin = indices == index
    if in_bin.any():
      rows.append((bin_label(index), int(in_bin.sum()), int((in_bin & ~correct[known]).sum())))
  return rows


def card_entry(confidences: Sequence[float], correct: Sequence[bool], *, data: str,
               beam_size: int, length_penalty: float, calibrated_at: str) -> dict[str, Any]:
  """The model card's record of a calibration on `data` (a description of the lines)."""
  threshold = choose_threshold(confidences, correct)
  figures = flag_figures(confidences, correct, threshold)
  intercept, slope = fit_error_rate(confidences, correct)
  return {"threshold": threshold, "measure": MEASURE, "max_error_rate": MAX_ERROR_RATE,
          "fit": {"intercept": intercept, "slope": slope,
                  "of": "logit(share wrong) = intercept + slope * log(1 - confidence)"},
          "data": data, **{name: figures[name] for name in ("lines", "wrong", "flagged",
                                                           "wrong_flagged")},
          "beam_size": int(beam_size), "length_penalty": float(length_penalty),
          "calibrated_at": calibrated_at}


def threshold_of_card(card: Mapping[str, Any]) -> float | None:
  """The threshold a model card carries; None for a card without one (exported before it was).

  Raises:
    ValueError: one line, if the card's calibration is not a threshold in [0, 1].
  """
  entry = card.get(CARD_KEY)
  if entry is None:
    return None
  threshold = entry.get("threshold") if isinstance(entry, Mapping) else None
  if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
      or not 0.0 <= threshold <= 1.0):
    raise ValueError(f"the card's '{CARD_KEY}' has no threshold in [0, 1]")
  return float(threshold)
