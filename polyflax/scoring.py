"""Scoring decoded test rows: pure functions over (factored, expanded) pairs.

`score` turns the rows of a test set and the model's predictions into the
figures `evaluate` reports: exact match, algebraic equivalence, exact match
per row group (`row_groups`: shape, trig, linear term cancelling, size of
the linear coefficient, seen or unseen in training) and the failures counted
by kind (`failure_kinds`). Nothing here decodes, reads files or needs jax:
the exact algebra of `algebra` is the only dependency.
"""

from __future__ import annotations

import bisect
import collections
from typing import Sequence

from polyflax import algebra

# Names of the coefficients (c2, c1, c0) of c2*u**2 + c1*u + c0.
COEFFICIENT_NAMES = ("quadratic", "linear", "constant")
# Kinds of failure counted by `score`: a row counts under every coefficient it
# gets wrong; the other kinds exclude the coefficient ones.
FAILURE_KINDS = ("unparseable", "printed_differently", "wrong_unit") + tuple(
    f"wrong_{name}" for name in COEFFICIENT_NAMES)
# Lower edges of the bins of |s|, s = a*d+b*c the linear coefficient of a
# two-binomial row (a*u+b)*(c*u+d), after the bin of 0 (its linear term
# cancels). 1-9 is near cancellation, where the sign or size of a small
# difference of two products goes wrong; 300-399 and >= 400 are the largest
# sums, which need both cross terms large, toward the edges of the data's
# range (|a|, |c| <= 9 and |b|, |d| <= 32: at most 576); 10-299 is the bulk.
LINEAR_SIZE_EDGES = (1, 10, 300, 400)


def _linear_size_bins() -> tuple[tuple[str, str], ...]:
  """(group, label) of each bin of `LINEAR_SIZE_EDGES`, in bin order."""
  bins = []
  for low, next_low in zip((0,) + LINEAR_SIZE_EDGES, LINEAR_SIZE_EDGES + (None,)):
    if next_low is None:
      suffix, label = f"{low}_plus", f">={low}"
    elif next_low == low + 1:
      suffix, label = f"{low}", f"{low}"
    else:
      suffix, label = f"{low}_{next_low - 1}", f"{low}-{next_low - 1}"
    bins.append((f"linear_abs_{suffix}", label))
  return tuple(bins)


# (group of `row_groups`, label) of each |s| bin, in bin order:
# ("linear_abs_0", "0"), ("linear_abs_1_9", "1-9"), ..., ("linear_abs_400_plus", ">=400").
LINEAR_SIZE_BINS = _linear_size_bins()


def _parse_or_none(text: str) -> algebra.Polynomial | None:
  try:
    return algebra.parse_polynomial(text)
  except algebra.AlgebraError:
    return None


def row_groups(factored: str, expanded: str, seen_lines: set[str] | None = None) -> list[str]:
  """The groups a test row is scored in: shape, trig, cancelling, |s|, seen or unseen, and both.

  Shapes are those of `algebra.SHAPES` ("binomials", "k_u_binomial",
  "monomial", "square"), or "unknown" for a side that is not a product of two
  linear factors. "linear_cancels" holds the products whose cross terms
  cancel (`algebra.linear_term_cancels`: `(19-5*h)*(19+5*h)` ->
  `361-25*h**2`), where the model must write no linear term although both
  factors have one. "seen"/"unseen" (only with `seen_lines`) says whether the
  whole line was among those the model trained on; the row is then also in
  "shape_<shape>_seen" or "shape_<shape>_unseen". A "binomials" row is also
  in the group of `LINEAR_SIZE_BINS` that holds |s|, the size of its linear
  coefficient s = a*d+b*c (`(21-t)*(-6*t-4)`: a, b = -1, 21 and c, d = -6, -4,
  so s = 4 - 126 = -122, in "linear_abs_10_299").
  """
  try:
    form = algebra.parse_factored(factored)
  except algebra.AlgebraError:
    form = None
  shape = "shape_unknown" if form is None else "shape_" + algebra.shape_of(form)
  groups = [shape]
  if algebra.is_trig(factored):
    groups.append("shape_trig")
  if form is not None and algebra.linear_term_cancels(form):
    groups.append("linear_cancels")
  if shape == "shape_binomials":
    groups.append(linear_size_group(form))
  if seen_lines is not None:
    seen = "seen" if f"{factored}={expanded}" in seen_lines else "unseen"
    groups += [seen, f"{shape}_{seen}"]
  return groups


def linear_size_group(form: algebra.FactoredForm) -> str:
  """The group of `LINEAR_SIZE_BINS` that holds |a*d+b*c|, the product's linear coefficient."""
  linear = abs(form.product_coefficients()[1])
  return LINEAR_SIZE_BINS[bisect.bisect_right(LINEAR_SIZE_EDGES, linear)][0]


def failure_kinds(expanded: str, predicted: str) -> list[str]:
  """Why `predicted` is not `expanded` (empty when they are equal).

  One of "unparseable" (not a polynomial of the grammar),
  "printed_differently" (the right polynomial, printed another way),
  "wrong_unit" (another variable or function), or the wrong coefficients:
  "wrong_quadratic", "wrong_linear", "wrong_constant".
  """
  if predicted == expanded:
    return []
  predicted_poly = _parse_or_none(predicted)
  if predicted_poly is None:
    return ["unparseable"]
  target_poly = _parse_or_none(expanded)
  if predicted_poly == target_poly:
    return ["printed_differently"]
  if target_poly is None or (predicted_poly.unit and target_poly.unit
                             and predicted_poly.unit != target_poly.unit):
    return ["wrong_unit"]
  return [f"wrong_{name}" for name, got, want in zip(
      COEFFICIENT_NAMES, predicted_poly.coefficients, target_poly.coefficients) if got != want]


def score(pairs: Sequence[tuple[str, str]], predictions: Sequence[str],
          seen_lines: set[str] | None = None) -> dict:
  """Exact match and the finer figures of a decoded test set.

  Args:
    pairs: (factored, expanded) rows.
    predictions: the model's expanded side for each row.
    seen_lines: `factored=expanded` lines of the training split, to split the
      score into rows seen in training and rows not seen (None: no split).

  Returns:
    A flat dict: `exact_match`, `num_correct`, `num_examples`; `equivalence`
    (the fraction whose prediction parses to the target polynomial, printed
    either way) and `num_equivalent`; `exact_match_<group>` and
    `num_examples_<group>` for each group of `row_groups` that has rows;
    `num_failures` and `failures_<kind>` for each kind of `FAILURE_KINDS`.
  """
  if len(pairs) != len(predictions):
    raise ValueError(f"{len(pairs)} rows but {len(predictions)} predictions")
  num_correct = num_equivalent = 0
  groups = collections.defaultdict(lambda: [0, 0])  # group -> [correct, total]
  failures = collections.Counter({kind: 0 for kind in FAILURE_KINDS})
  for (factored, expanded), predicted in zip(pairs, predictions):
    correct = predicted == expanded
    kinds = failure_kinds(expanded, predicted)
    num_correct += correct
    num_equivalent += correct or kinds == ["printed_differently"]
    failures.update(kinds)
    for group in row_groups(factored, expanded, seen_lines):
      groups[group][0] += correct
      groups[group][1] += 1
  num_examples = len(pairs)
  total = max(num_examples, 1)
  metrics = {
      "exact_match": num_correct / total,
      "num_correct": num_correct,
      "num_examples": num_examples,
      "equivalence": num_equivalent / total,
      "num_equivalent": num_equivalent,
      "num_failures": num_examples - num_correct,
  }
  for kind in FAILURE_KINDS:
    metrics[f"failures_{kind}"] = failures[kind]
  for group, (correct, count) in sorted(groups.items()):
    metrics[f"exact_match_{group}"] = correct / count
    metrics[f"num_examples_{group}"] = count
  return metrics
