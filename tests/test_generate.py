"""Tests of the sampler: determinism, validity and fidelity to the real rows.

The fidelity tests compare 200,000 generated rows with the 50,001 real rows.
Both are random samples, so every comparison is a two-sample test whose
threshold is set by sampling noise alone:

* Categorical statistics (shape, trig function, variable, coefficients,
  constants, lengths, ...) use Pearson's chi-square test of homogeneity on
  the 2 x k table of counts, with sparse categories pooled so that every
  expected count is at least 5. Under the hypothesis that both samples come
  from the same distribution the statistic is chi-square with k - 1 degrees
  of freedom; the test fails above its 1 - 1e-4 quantile (Wilson-Hilferty
  approximation). A real difference in a share of about 1% (shape, trig,
  coefficient 1) moves the statistic by far more than that.
* Proportions (zero constants, coefficient 1, squares) use the two-sample z
  statistic with the pooled standard error and fail above |z| = 4.
* The repeat rate (share of rows of a 50,001-row sample equal to another row
  of the sample) has no simple closed-form error: over ten generated samples
  its standard deviation is 0.0012 around 0.054; the difference of two such
  rates then has a standard deviation of about 0.0017, and the test allows 4
  of them (0.0068).

Every sample is drawn with a fixed seed, so the tests are deterministic; the
thresholds only say how far apart two samples of one process can be.
"""

import collections
import hashlib
import math
import re

import numpy as np
import pytest

from polyflax import algebra
from polyflax import generate

N_GENERATED = 200_000
# The standard normal quantile for a one-sided tail of 1e-4.
Z_TAIL = 3.719


def chi_square_critical(dof: int) -> float:
  """Upper 1e-4 quantile of chi-square(dof) by the Wilson-Hilferty approximation."""
  return dof * (1 - 2 / (9 * dof) + Z_TAIL * math.sqrt(2 / (9 * dof)))**3


def chi_square_homogeneity(first: collections.Counter,
                           second: collections.Counter) -> tuple[float, int]:
  """Pearson's statistic and degrees of freedom for two samples of categories.

  Categories are taken in sorted order and pooled with their neighbours
  until the expected count in each sample is at least 5.
  """
  n1, n2 = sum(first.values()), sum(second.values())
  share1 = n1 / (n1 + n2)
  bins, pending = [], [0, 0]
  for key in sorted(set(first) | set(second)):
    pending = [pending[0] + first[key], pending[1] + second[key]]
    total = sum(pending)
    if total * min(share1, 1 - share1) >= 5:
      bins.append(pending)
      pending = [0, 0]
  if sum(pending):
    if bins:
      bins[-1] = [bins[-1][0] + pending[0], bins[-1][1] + pending[1]]
    else:
      bins.append(pending)
  statistic = 0.0
  for count1, count2 in bins:
    total = count1 + count2
    expected1, expected2 = total * share1, total * (1 - share1)
    statistic += (count1 - expected1)**2 / expected1 + (count2 - expected2)**2 / expected2
  return statistic, len(bins) - 1


def two_sample_z(hits1: int, n1: int, hits2: int, n2: int) -> float:
  pooled = (hits1 + hits2) / (n1 + n2)
  standard_error = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
  return (hits1 / n1 - hits2 / n2) / standard_error if standard_error else 0.0


def features(lines: list[str]) -> dict[str, collections.Counter]:
  """Counts of every statistic compared between real and generated rows."""
  out = collections.defaultdict(collections.Counter)
  for line in lines:
    factored, expanded = line.split("=")
    form = algebra.parse_factored(factored)
    shape = algebra.shape_of(form)
    trig = form.unit[:3] if "(" in form.unit else "none"
    out["shape"][shape] += 1
    out["trig"][trig] += 1
    out["shape x trig"][(shape, trig != "none")] += 1
    out["variable"][form.unit[-2] if "(" in form.unit else form.unit] += 1
    out["factored length"][len(factored)] += 1
    out["expanded length"][len(expanded)] += 1
    (a, b), (c, d) = form.first, form.second
    if shape == "monomial":
      out["monomial k"][a * c] += 1
      out["zero constant"][True] += 2
      continue
    # Only factors whose coefficient is known: both of a binomial row, the
    # sum of a k*u*(c*u+d) row and its outer k.
    out["zero constant"][b == 0] += 1
    out["zero constant"][d == 0] += 1
    if shape == "k_u_binomial":
      out["outer k"][a] += 1
      out["u coefficient"][c] += 1
      out["constant"][d] += 1
      out["coefficient is 1, constant is 0"][(a == 1, True)] += 1
      out["coefficient is 1, constant is 0"][(c == 1, False)] += 1
    else:
      out["u coefficient"][a] += 1
      out["u coefficient"][c] += 1
      out["constant"][b] += 1
      out["constant"][d] += 1
      out["coefficient is 1, constant is 0"][(a == 1, False)] += 1
      out["coefficient is 1, constant is 0"][(c == 1, False)] += 1
      out["both coefficients 1"][(a == 1) + (c == 1)] += 1
  return out


@pytest.fixture(scope="module")
def generated_lines():
  return generate.generate_lines(N_GENERATED, seed=2024)


@pytest.fixture(scope="module")
def compared_features(real_dev_lines, generated_lines):
  return features(list(real_dev_lines)), features(generated_lines)


CATEGORICAL = ["shape", "trig", "shape x trig", "variable", "factored length", "expanded length",
               "monomial k", "outer k", "u coefficient", "constant",
               "coefficient is 1, constant is 0", "both coefficients 1"]


@pytest.mark.parametrize("name", CATEGORICAL)
def test_distribution_matches_real(compared_features, name):
  real, generated = compared_features
  statistic, dof = chi_square_homogeneity(real[name], generated[name])
  assert dof >= 1
  assert statistic < chi_square_critical(dof), (name, statistic, dof, real[name].most_common(8),
                                                generated[name].most_common(8))


@pytest.mark.parametrize("name,key", [
    ("zero constant", True),
    ("shape", "square"),
    ("shape", "monomial"),
    ("shape", "k_u_binomial"),
    ("trig", "none"),
    ("u coefficient", 1),
])
def test_share_matches_real(compared_features, name, key):
  real, generated = compared_features
  z = two_sample_z(real[name][key], sum(real[name].values()), generated[name][key],
                   sum(generated[name].values()))
  assert abs(z) < 4, (name, key, z)


def test_shares_are_the_originals(generated_lines):
  """The documented shares: 63.9/32.1/3.85/0.10% shapes, 2.9% trig (a third each)."""
  sample = generated_lines[:100_000]
  counts = collections.Counter(algebra.row_shape(line.split("=")[0]) for line in sample)
  shares = {shape: counts[shape] / 100_000 for shape in algebra.SHAPES}
  assert abs(shares["binomials"] - 0.639) < 0.006
  assert abs(shares["k_u_binomial"] - 0.321) < 0.006
  assert abs(shares["monomial"] - 0.0385) < 0.003
  assert abs(shares["square"] - 0.0010) < 0.0005
  trig = collections.Counter(re.search(r"(sin|cos|tan)\(", line).group(1) for line in sample
                             if algebra.is_trig(line))
  assert abs(sum(trig.values()) / 100_000 - 0.03) < 0.002
  assert all(abs(count / sum(trig.values()) - 1 / 3) < 0.04 for count in trig.values())


def repeat_rate(lines) -> float:
  return 1 - len(set(lines)) / len(lines)


def test_repeat_rate_matches_real(real_dev_lines, generated_lines):
  sample = generated_lines[:len(real_dev_lines)]
  assert abs(repeat_rate(sample) - repeat_rate(real_dev_lines)) < 0.0068


def test_value_ranges(generated_lines):
  rows = generate.sample_rows(N_GENERATED, seed=2024)
  for factors in (rows.first, rows.second):
    coefficients, constants = factors[:, 0], factors[:, 1]
    assert set(np.unique(coefficients)) == set(range(-9, 9)) - {0}
    assert set(np.unique(constants)) == set(range(-32, 32))
  assert max(len(line.split("=")[0]) for line in generated_lines) <= 29
  assert max(len(line.split("=")[1]) for line in generated_lines) <= 29


def test_generated_lines_are_canonical():
  lines = generate.generate_lines(20_000, seed=3)
  rows = generate.sample_rows(20_000, seed=3)
  for line, form in zip(lines, rows.forms()):
    factored, expanded = line.split("=")
    assert line == generate.format_row(*form)
    assert algebra.format_factored(*algebra.parse_factored(factored)) == factored
    assert algebra.expand(factored) == expanded


def test_deterministic_for_a_seed():
  assert generate.generate_lines(5000, seed=7) == generate.generate_lines(5000, seed=7)
  assert generate.generate_lines(5000, seed=7) != generate.generate_lines(5000, seed=8)
  # The rows for n are a prefix of the rows for any larger n.
  long = generate.generate_lines(generate.BLOCK_SIZE + 100, seed=7)
  assert long[:5000] == generate.generate_lines(5000, seed=7)
  assert generate.generate_lines(0, seed=7) == []


def test_same_rows_on_every_machine():
  """Pinned output: changes only if the generator (or numpy's PCG64) changes."""
  assert generate.generate_lines(4, seed=0) == [
      "5*x*(-4*x-10)=-20*x**2-50*x",
      "(-6*s-18)*(s-10)=-6*s**2+42*s+180",
      "8*n*(n+24)=8*n**2+192*n",
      "(i+19)*(2*i-31)=2*i**2+7*i-589",
  ]
  digest = hashlib.sha256("\n".join(generate.generate_lines(100_000, seed=1)).encode()).hexdigest()
  assert digest == "f4ec5601210b0004b784ea8eb19e4680f345beda0f4906dc03826a4f8c4e75e3"


def test_negative_n_is_refused():
  with pytest.raises(ValueError):
    generate.generate_lines(-1, seed=0)


def test_as_drawn_finds_the_products_the_sampler_can_draw():
  # Small ranges, so that every drawable product can be listed (the real
  # lines check the default ranges: test_predict.py).
  config = generate.GeneratorConfig(coefficient_range=(-3, 2), constant_range=(-5, 4))

  def product_keys(a, b, c, d):  # one integer per product (c2, c1, c0) of small factors
    return ((a * c + 256) * 1024 + a * d + b * c + 512) * 1024 + b * d + 512

  coefficients = np.array([-3, -2, -1, 1, 2])
  a, b, c, d = np.meshgrid(coefficients, np.arange(-5, 5), coefficients, np.arange(-5, 5))
  drawable = np.unique(product_keys(a, b, c, d))
  rng = np.random.default_rng(5)
  a, c = (rng.choice([x for x in range(-5, 6) if x], 3000) for _ in range(2))
  b, d = (rng.integers(-8, 9, 3000) for _ in range(2))
  expected = np.isin(product_keys(a, b, c, d), drawable)
  assert 0.1 < expected.mean() < 0.9
  for form, in_range in zip(generate.SampledRows(np.zeros(3000, np.int64), np.stack([a, b], 1),
                                                 np.stack([c, d], 1)).forms(), expected):
    drawn = generate.as_drawn(form, config)
    assert (drawn is not None) == in_range, form
    if drawn is not None:
      assert drawn.product() == form.product()
      assert generate.can_draw(drawn.first, config) and generate.can_draw(drawn.second, config)
      if generate.can_draw(form.first, config) and generate.can_draw(form.second, config):
        assert drawn == form
