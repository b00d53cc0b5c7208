"""How far an answer can be trusted: a model's confidence threshold, and figures by confidence.

Decoding gives every answer a confidence (`decode.py`: the lowest
probability the model gave any token it chose). A model's threshold is
calibrated on lines it never trained on, the generated validation split
(never on real lines): `choose_threshold` fits the share of wrong answers as
a function of the confidence that never rises as the confidence rises
(pool-adjacent-violators), and returns the lowest confidence at which that
share is at most `MAX_ERROR_RATE`. An answer whose confidence is below the
threshold is flagged (`is_flagged`): among answers that unsure, more than 1
in 100 were wrong. Export stores the threshold and what it was measured on
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
# Edges of the confidence bins of `bin_figures`; the bins are [0, 0.5),
# [0.5, 0.9), ..., [0.9999, 1]: a confident model's answers crowd near 1.
BIN_EDGES = (0.5, 0.9, 0.99, 0.999, 0.9999)
# The model card's key of `card_entry`.
CARD_KEY = "calibration"


def error_rate_steps(confidences: Sequence[float],
                     correct: Sequence[bool]) -> list[tuple[float, float, int]]:
  """The share of wrong answers, fitted to fall (or stay) as the confidence rises.

  Pool-adjacent-violators over the distinct confidences, highest first: a
  run of confidences where a more confident stretch was wrong more often
  than a less confident one is pooled into one step.

  Returns:
    Steps (lowest confidence of the step, share wrong, answers), in order
    of rising confidence; their shares never rise. Empty for no answers.
  """
  confidences = np.asarray(confidences, np.float64)
  wrong = ~np.asarray(correct, bool)
  if confidences.shape != wrong.shape:
    raise ValueError(f"{confidences.size} confidences but {wrong.size} correct flags")
  if np.isnan(confidences).any():
    raise ValueError("a confidence is NaN")
  values, inverse = np.unique(confidences, return_inverse=True)
  wrong_per_value = np.bincount(inverse, weights=wrong, minlength=len(values))
  answers_per_value = np.bincount(inverse, minlength=len(values))
  blocks: list[list] = []  # [lowest confidence, wrong, answers], highest confidence first
  for value, block_wrong, answers in zip(values[::-1], wrong_per_value[::-1],
                                         answers_per_value[::-1]):
    blocks.append([float(value), float(block_wrong), int(answers)])
    # Going down in confidence, the share wrong may only rise.
    while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
      low, block_wrong, answers = blocks.pop()
      blocks[-1] = [low, blocks[-1][1] + block_wrong, blocks[-1][2] + answers]
  return [(low, block_wrong / answers, answers) for low, block_wrong, answers in blocks[::-1]]


def choose_threshold(confidences: Sequence[float], correct: Sequence[bool],
                     max_error_rate: float = MAX_ERROR_RATE) -> float:
  """The confidence below which the fitted share of wrong answers exceeds `max_error_rate`.

  The lowest confidence of the first step of `error_rate_steps` whose share
  is at most `max_error_rate`, so an answer less sure than every answer
  measured is flagged too; 1.0 when every step's share is higher (every
  answer short of certain is flagged).

  Raises:
    ValueError: for no answers, lengths that differ, or a NaN confidence.
  """
  steps = error_rate_steps(confidences, correct)
  if not steps:
    raise ValueError("no answers to calibrate on")
  for low, share_wrong, _ in steps:
    if share_wrong <= max_error_rate:
      return low
  return 1.0


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
  return {"threshold": threshold, "measure": MEASURE, "max_error_rate": MAX_ERROR_RATE,
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
