"""Scoring: exact match, equivalence, row groups and failure kinds of decoded rows."""

import pathlib
import subprocess
import sys

import pytest

from polyflax import algebra, scoring

REPO = pathlib.Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
# score()

# (factored, expanded, prediction, what the row should count as).
SCORED_ROWS = [
    ("(k-15)*(2*k+29)", "2*k**2-k-435", "2*k**2-k-435", "exact"),
    ("(21-t)*(-6*t-4)", "6*t**2-122*t-84", "6*t**2-84-122*t", "printed_differently"),
    ("2*y*(7*y-11)", "14*y**2-22*y", "14*y**2-22*y+", "unparseable"),
    ("(17-2*i)*(i+8)", "-2*i**2+i+136", "-2*i**2+3*i+136", "wrong_linear"),
    ("-7*sin(i)**2", "-7*sin(i)**2", "-7*sin(i)**2", "exact"),
    ("(z+3)**2", "z**2+6*z+9", "x**2+6*x+9", "wrong_unit"),
    ("5*(27-6*sin(j))*sin(j)", "-30*sin(j)**2+135*sin(j)", "-31*sin(j)**2+136*sin(j)",
     "wrong_quadratic+linear"),
]


def test_handcrafted_rows_are_expanded_correctly():
  for factored, expanded, _, _ in SCORED_ROWS:
    assert algebra.expand(factored) == expanded


def test_score_counts_exact_equivalent_and_wrong_coefficients():
  pairs = [(factored, expanded) for factored, expanded, _, _ in SCORED_ROWS]
  predictions = [predicted for _, _, predicted, _ in SCORED_ROWS]
  seen = {"(k-15)*(2*k+29)=2*k**2-k-435", "2*y*(7*y-11)=14*y**2-22*y"}
  metrics = scoring.score(pairs, predictions, seen)
  assert metrics["num_examples"] == 7
  assert metrics["num_correct"] == 2
  assert metrics["exact_match"] == pytest.approx(2 / 7)
  assert metrics["num_equivalent"] == 3  # the two exact ones and the reordered one
  assert metrics["equivalence"] == pytest.approx(3 / 7)
  assert metrics["num_failures"] == 5
  assert {name: metrics[f"failures_{name}"] for name in scoring.FAILURE_KINDS} == {
      "unparseable": 1, "printed_differently": 1, "wrong_unit": 1,
      "wrong_quadratic": 1, "wrong_linear": 2, "wrong_constant": 0}
  expected_groups = {  # group: (exact match, rows)
      "shape_binomials": (1 / 3, 3), "shape_k_u_binomial": (0.0, 2),
      "shape_monomial": (1.0, 1), "shape_square": (0.0, 1), "shape_trig": (0.5, 2),
      "seen": (0.5, 2), "unseen": (0.2, 5),
      "shape_binomials_seen": (1.0, 1), "shape_binomials_unseen": (0.0, 2),
      "shape_k_u_binomial_seen": (0.0, 1), "shape_k_u_binomial_unseen": (0.0, 1),
      "shape_monomial_unseen": (1.0, 1), "shape_square_unseen": (0.0, 1),
      # |a*d+b*c|: 1 for (k-15)*(2*k+29) and (17-2*i)*(i+8), 122 for (21-t)*(-6*t-4).
      "linear_abs_1_9": (0.5, 2), "linear_abs_10_299": (0.0, 1)}
  for group, (exact_match, count) in expected_groups.items():
    assert metrics[f"exact_match_{group}"] == pytest.approx(exact_match), group
    assert metrics[f"num_examples_{group}"] == count, group
  assert {name for name in metrics if name.startswith("num_examples_")} == {
      f"num_examples_{group}" for group in expected_groups}


def test_score_without_training_lines_has_no_seen_split_and_checks_lengths():
  metrics = scoring.score([("(z+3)**2", "z**2+6*z+9")], ["z**2+6*z+9"])
  assert metrics["exact_match"] == 1.0
  assert not any(name.endswith(("_seen", "_unseen")) for name in metrics)
  with pytest.raises(ValueError, match="1 rows but 2 predictions"):
    scoring.score([("(z+3)**2", "z**2+6*z+9")], ["a", "b"])


def test_rows_whose_linear_term_cancels_are_grouped_apart():
  # (19-5*h)*(5*h+19): -5*19 + 19*5 = 0, so 361-25*h**2; (18*o-22)*(o+11):
  # 18*11 - 22*1 = 176, so its linear term stays.
  assert algebra.expand("(19-5*h)*(5*h+19)") == "361-25*h**2"
  assert "linear_cancels" in scoring.row_groups("(19-5*h)*(5*h+19)", "361-25*h**2")
  assert algebra.expand("(18*o-22)*(o+11)") == "18*o**2+176*o-242"
  assert "linear_cancels" not in scoring.row_groups("(18*o-22)*(o+11)", "18*o**2+176*o-242")
  # No linear term without cross terms to cancel: k*u**2 is not in the group.
  assert "linear_cancels" not in scoring.row_groups("-7*sin(i)**2", "-7*sin(i)**2")
  assert scoring.row_groups("x+", "x") == ["shape_unknown"]


def test_score_reports_the_rows_whose_linear_term_cancels():
  pairs = [("(19-5*h)*(5*h+19)", "361-25*h**2"), ("(x+3)*(2*x-6)", "2*x**2-18"),
           ("(2*sin(a)-1)*(4*sin(a)+2)", "8*sin(a)**2-2"),
           ("(o+11)*(18*o-22)", "18*o**2+176*o-242"), ("(z+3)**2", "z**2+6*z+9")]
  for factored, expanded in pairs:
    assert algebra.expand(factored) == expanded
    assert algebra.format_factored(*algebra.parse_factored(factored)) == factored
  predictions = ["361-25*h**2", "2*x**2+0*x-18", "8*sin(a)**2-2", "18*o**2+176*o-242", "z**2+9"]
  metrics = scoring.score(pairs, predictions)
  assert metrics["num_examples_linear_cancels"] == 3
  assert metrics["exact_match_linear_cancels"] == pytest.approx(2 / 3)
  assert metrics["num_examples_shape_binomials"] == 4
  assert metrics["exact_match"] == pytest.approx(3 / 5)
  from polyflax import evaluate  # pylint: disable=import-outside-toplevel
  report = evaluate._summary(metrics)  # pylint: disable=protected-access
  assert ["linear_cancels", "3", "1", "0.6667"] in [line.split() for line in report.splitlines()]


# Two-binomial rows as the data writes them, with |a*d+b*c| on both sides of
# each edge of scoring.LINEAR_SIZE_EDGES: (factored, expanded, |s|, group).
LINEAR_SIZE_ROWS = [
    ("(-8*k-8)*(4*k-4)", "32-32*k**2", 0, "linear_abs_0"),
    ("(-8*y-25)*(7*y-22)", "-56*y**2+y+550", 1, "linear_abs_1_9"),
    ("(17-6*y)*(-9*y-24)", "54*y**2-9*y-408", 9, "linear_abs_1_9"),
    ("(15-5*t)*(-8*t-26)", "40*t**2+10*t-390", 10, "linear_abs_10_299"),
    ("(21-t)*(-6*t-4)", "6*t**2-122*t-84", 122, "linear_abs_10_299"),
    ("(-9*y-19)*(-2*y-29)", "18*y**2+299*y+551", 299, "linear_abs_10_299"),
    ("(-7*k-29)*(-6*k-18)", "42*k**2+300*k+522", 300, "linear_abs_300_399"),
    ("(21-9*k)*(7*k-28)", "-63*k**2+399*k-588", 399, "linear_abs_300_399"),
    ("(25-9*x)*(7*x-25)", "-63*x**2+400*x-625", 400, "linear_abs_400_plus"),
]


def test_two_binomial_rows_are_grouped_by_the_size_of_their_linear_coefficient():
  assert [group for group, _ in scoring.LINEAR_SIZE_BINS] == [
      "linear_abs_0", "linear_abs_1_9", "linear_abs_10_299", "linear_abs_300_399",
      "linear_abs_400_plus"]
  assert [label for _, label in scoring.LINEAR_SIZE_BINS] == [
      "0", "1-9", "10-299", "300-399", ">=400"]
  size_groups = {group for group, _ in scoring.LINEAR_SIZE_BINS}
  for factored, expanded, size, group in LINEAR_SIZE_ROWS:
    assert algebra.expand(factored) == expanded
    assert abs(algebra.parse_polynomial(expanded).coefficients[1]) == size, factored
    groups = scoring.row_groups(factored, expanded)
    assert "shape_binomials" in groups, factored
    assert [name for name in groups if name in size_groups] == [group], factored
  # The factors as parsed, not as printed: (17-6*y) is a=-6, b=17, so
  # s = -6*-24 + 17*-9 = -9; reading it as a=17, b=-6 would give -354.
  assert "linear_abs_1_9" in scoring.row_groups("(17-6*y)*(-9*y-24)", "54*y**2-9*y-408")
  assert "linear_abs_1_9" in scoring.row_groups("(-9*y-24)*(17-6*y)", "54*y**2-9*y-408")
  # Another spelling, an integer factor in front: 2*(x+20)*(x-1) = (x+20)*(2*x-2), s = 38.
  assert "linear_abs_10_299" in scoring.row_groups("2*(x+20)*(x-1)", "2*x**2+38*x-40")
  # A cancelling row is in both "linear_cancels" and the bin of 0.
  cancelling = scoring.row_groups("(19-5*h)*(5*h+19)", "361-25*h**2")
  assert "linear_cancels" in cancelling and "linear_abs_0" in cancelling
  # Rows of the other shapes, and unparseable ones, are in no bin.
  for factored, expanded in (("2*y*(7*y-11)", "14*y**2-22*y"), ("-7*sin(i)**2", "-7*sin(i)**2"),
                             ("(z+3)**2", "z**2+6*z+9"), ("x+", "x")):
    assert not size_groups.intersection(scoring.row_groups(factored, expanded)), factored


def test_score_reports_exact_match_by_the_size_of_the_linear_coefficient():
  pairs = [(factored, expanded) for factored, expanded, _, _ in LINEAR_SIZE_ROWS]
  pairs.append(("2*y*(7*y-11)", "14*y**2-22*y"))
  predictions = [expanded for _, expanded in pairs]
  predictions[2] = "54*y**2+9*y-408"  # the sign of the small difference wrong
  metrics = scoring.score(pairs, predictions)
  assert {group: metrics.get(f"num_examples_{group}") for group, _ in scoring.LINEAR_SIZE_BINS} == {
      "linear_abs_0": 1, "linear_abs_1_9": 2, "linear_abs_10_299": 3, "linear_abs_300_399": 2,
      "linear_abs_400_plus": 1}
  assert sum(metrics[f"num_examples_{group}"] for group, _ in scoring.LINEAR_SIZE_BINS) == (
      metrics["num_examples_shape_binomials"])
  assert metrics["exact_match_linear_abs_1_9"] == pytest.approx(0.5)
  assert metrics["exact_match_linear_abs_10_299"] == 1.0


def test_failure_kinds_of_single_predictions():
  assert scoring.failure_kinds("2*k**2-k-435", "2*k**2-k-435") == []
  assert scoring.failure_kinds("2*k**2-k-435", "-k+2*k**2-435") == ["printed_differently"]
  assert scoring.failure_kinds("2*k**2-k-435", "2*k**2-k-436") == ["wrong_constant"]
  assert scoring.failure_kinds("2*k**2-k-435", "2*k**2-435") == ["wrong_linear"]
  assert scoring.failure_kinds("2*k**2-k-435", "") == ["unparseable"]
  assert scoring.failure_kinds("2*k**2-k-435", "2*k**2-k-?") == ["unparseable"]


def test_scoring_needs_neither_jax_nor_the_model():
  code = ("import sys; from polyflax import scoring; "
          "print(sorted({'jax', 'polyflax.decode', 'polyflax.inference'} & set(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
  assert result.stdout.strip() == "[]"
