"""Sampler of `factored=expanded` rows distributed as the original data set.

The generating process, inferred from the published sample of the original
rows (see `tests/test_generate.py` for the fidelity checks):

* A row picks its unit: a variable (s, i and n twice as likely as each of the
  other ten, i.e. weights 2/16 and 1/16), wrapped with probability 0.03 in
  sin, cos or tan (a third each, independent of the variable).
* It multiplies two independently drawn linear factors a*u + b. The
  coefficient a is omitted (so 1) with probability 0.2, else uniform on
  -9..8 without 0 (hence 1 is 0.2 + 0.8/17 = 24.7% of coefficients, 5.25
  times any other value). The constant b is omitted (so 0) with probability
  0.2, else uniform on -32..31 without 0.
* The product is printed as sympy printed it (see `polyflax.algebra`),
  which yields the shapes: two binomials (0.8**2 = 64%, of which equal
  factors, a square, about 0.1%), k*u*(c*u+d) (2*0.2*0.8 = 32%) and the
  monomial k*u**2 (0.2**2 = 4%). The factor order is the printer's.

Rows are drawn independently, so repeats occur at the original's rate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from polyflax import algebra

# Variables and their weights: the original drew from 16 equally likely
# slots, two each for s, i and n.
VARIABLE_WEIGHTS = {var: (2 if var in "sin" else 1) for var in algebra.VARIABLES}


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Parameters of the generating process (defaults: the original's).

  Attributes:
    trig_probability: probability that the unit is sin/cos/tan of a variable.
    unit_coefficient_probability: probability that a factor's coefficient of
      u is omitted (is 1) rather than drawn uniformly from `coefficients`.
    zero_constant_probability: probability that a factor's constant is
      omitted (is 0) rather than drawn uniformly from `constants`.
    square_probability: probability that the second factor is forced to be a
      copy of the first (0 for the original, where squares arise by chance;
      tests raise it to get many squares).
    coefficient_range: inclusive range of the drawn coefficients of u (0
      excluded).
    constant_range: inclusive range of the drawn constants (0 excluded).
  """

  trig_probability: float = 0.03
  unit_coefficient_probability: float = 0.2
  zero_constant_probability: float = 0.2
  square_probability: float = 0.0
  coefficient_range: tuple[int, int] = (-9, 8)
  constant_range: tuple[int, int] = (-32, 31)


DEFAULT_CONFIG = GeneratorConfig()


def can_draw(factor: algebra.LinearFactor, config: GeneratorConfig = DEFAULT_CONFIG) -> bool:
  """Whether the sampler can draw the factor a*u + b.

  a is 1 or in `coefficient_range` but not 0; b is 0 or in `constant_range`.
  """
  (a, b), (a_low, a_high), (b_low, b_high) = factor, config.coefficient_range, config.constant_range
  return (a == 1 or (a_low <= a <= a_high and a != 0)) and (b == 0 or b_low <= b <= b_high)


def as_drawn(form: algebra.FactoredForm,
             config: GeneratorConfig = DEFAULT_CONFIG) -> algebra.FactoredForm | None:
  """`form`'s product as two factors the sampler can draw, or None if it has none.

  This is the data's range: the products a row can hold. `form` itself when
  the sampler can draw both its factors, else the first of the same product's
  other factorizations that it can draw (`algebra.refactorizations`):
  `2*(x+20)*(x-1)`, read as (2*x+40)*(x-1), is also (x+20)*(2*x-2), and a
  monomial k*u**2 is in range when k is a product of two coefficients
  (72 = -9*-8, not 11 or -81).
  """
  if can_draw(form.first, config) and can_draw(form.second, config):
    return form
  bound = max(abs(config.coefficient_range[0]), abs(config.coefficient_range[1]), 1)
  for other in algebra.refactorizations(form, bound):
    if can_draw(other.first, config) and can_draw(other.second, config):
      return other
  return None


@dataclasses.dataclass(frozen=True)
class SampledRows:
  """The sampled factors of n rows, as arrays of length n.

  Attributes:
    unit_ids: int64 array, the index of each row's unit in `algebra.UNITS`.
    first: (n, 2) int64 array, the factor (a, b) of a*u + b.
    second: (n, 2) int64 array, the factor (c, d) of c*u + d.
  """

  unit_ids: np.ndarray
  first: np.ndarray
  second: np.ndarray

  @property
  def units(self) -> list[str]:
    return [algebra.UNITS[i] for i in self.unit_ids.tolist()]

  @property
  def is_trig(self) -> np.ndarray:
    return self.unit_ids >= len(algebra.VARIABLES)

  def forms(self) -> list[algebra.FactoredForm]:
    return [
        algebra.FactoredForm(unit, (a, b), (c, d))
        for unit, (a, b), (c, d) in zip(self.units, self.first.tolist(), self.second.tolist())
    ]


def nonzero_values(value_range: tuple[int, int]) -> np.ndarray:
  low, high = value_range
  values = np.arange(low, high + 1, dtype=np.int64)
  return values[values != 0]


def _sample_factors(rng: np.random.Generator, n: int, config: GeneratorConfig) -> np.ndarray:
  """Draws n factors (a, b) as an (n, 2) int64 array."""
  coefficient_values = nonzero_values(config.coefficient_range)
  constant_values = nonzero_values(config.constant_range)
  unit_coefficient = rng.random(n) < config.unit_coefficient_probability
  coefficients = coefficient_values[rng.integers(0, len(coefficient_values), n)]
  zero_constant = rng.random(n) < config.zero_constant_probability
  constants = constant_values[rng.integers(0, len(constant_values), n)]
  return np.stack([np.where(unit_coefficient, 1, coefficients),
                   np.where(zero_constant, 0, constants)], axis=1)


# Rows are drawn in blocks of this many, each block from its own stream, so
# that the first n rows of a seed do not depend on how many rows are asked for.
BLOCK_SIZE = 1 << 16


def sample_units(rng: np.random.Generator, n: int, config: GeneratorConfig) -> np.ndarray:
  """Draws n units as indices into `algebra.UNITS`: a weighted variable, maybe wrapped in trig."""
  variable_slots = np.array([index for index, var in enumerate(algebra.VARIABLES)
                             for _ in range(VARIABLE_WEIGHTS[var])], dtype=np.int64)
  variables = variable_slots[rng.integers(0, len(variable_slots), n)]
  is_trig = rng.random(n) < config.trig_probability
  functions = rng.integers(0, len(algebra.FUNCTIONS), n)
  # algebra.UNITS lists the variables, then sin, cos and tan of each variable.
  return variables + np.where(is_trig, (functions + 1) * len(algebra.VARIABLES), 0)


def _sample_block(rng: np.random.Generator, n: int, config: GeneratorConfig) -> SampledRows:
  unit_ids = sample_units(rng, n, config)
  first = _sample_factors(rng, n, config)
  second = _sample_factors(rng, n, config)
  if config.square_probability > 0:
    copy = rng.random(n) < config.square_probability
    second[copy] = first[copy]
  return SampledRows(unit_ids=unit_ids, first=first, second=second)


def sample_rows(n: int, seed: int, config: GeneratorConfig = DEFAULT_CONFIG) -> SampledRows:
  """Draws the units and factors of n rows, deterministically for a seed.

  Uses numpy's PCG64 generator, whose streams are the same on every
  platform, and only integer and uniform draws, so the rows are identical on
  every machine. Block b of `BLOCK_SIZE` rows comes from the stream seeded
  with [seed, b], so the rows for n are a prefix of the rows for any m > n.
  """
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  blocks = [
      _sample_block(np.random.default_rng([seed, block]), BLOCK_SIZE, config)
      for block in range(-(-n // BLOCK_SIZE))
  ]
  if not blocks:
    empty = np.zeros((0, 2), dtype=np.int64)
    return SampledRows(unit_ids=np.zeros(0, dtype=np.int64), first=empty, second=empty)
  return SampledRows(unit_ids=np.concatenate([b.unit_ids for b in blocks])[:n],
                     first=np.concatenate([b.first for b in blocks])[:n],
                     second=np.concatenate([b.second for b in blocks])[:n])


def format_row(unit: str, first: algebra.LinearFactor, second: algebra.LinearFactor) -> str:
  """One `factored=expanded` line (no newline) for (first) * (second)."""
  form = algebra.FactoredForm(unit, first, second)
  return f"{algebra.format_factored(*form)}={algebra.format_expanded(form.product())}"


def _signed(text: str) -> str:
  return text if text.startswith("-") else "+" + text


class _RowPrinter:
  """Prints many rows fast, with the exact rules of `polyflax.algebra`.

  The text of every factor, outer coefficient and expanded term is computed
  once with a placeholder for the unit; a row is a few table look-ups and
  concatenations, and the unit is filled in for all rows of a unit at once.
  The order of two sums in a product is a precomputed rank.
  """

  _PLACEHOLDER = "@"

  def __init__(self, config: GeneratorConfig):
    unit = self._PLACEHOLDER
    coefficient_low, coefficient_high = config.coefficient_range
    constant_low, constant_high = config.constant_range
    self.coefficient_low = min(coefficient_low, 1)
    self.constant_low = min(constant_low, 0)
    self.constant_span = max(constant_high, 0) - self.constant_low + 1
    coefficients = range(self.coefficient_low, max(coefficient_high, 1) + 1)
    constants = range(self.constant_low, self.constant_low + self.constant_span)
    sums = [(c, d) for c in coefficients for d in constants]  # In factor-id order.
    ranked = sorted((f for f in sums if f[0] and f[1]), key=algebra.linear_sort_key)
    rank_of = {factor: rank for rank, factor in enumerate(ranked)}
    self.rank = np.array([rank_of.get(factor, -1) for factor in sums], dtype=np.int64)
    self.sum_text = [
        "(" + algebra.format_linear(factor, unit) + ")" if factor[0] and factor[1] else ""
        for factor in sums
    ]
    # Coefficients of the expansion are bounded by these.
    self.max_coefficient = max(abs(coefficient_low), abs(coefficient_high), 1)
    max_constant = max(abs(constant_low), abs(constant_high))
    self.max_square = self.max_coefficient**2
    self.max_linear = 2 * self.max_coefficient * max_constant
    self.max_constant = max_constant**2
    square_values = range(-self.max_square, self.max_square + 1)
    self.outer_text = [self._outer(k) for k in square_values]
    self.monomial_text = [algebra.format_expanded_coefficients(unit, k, 0, 0) if k else ""
                          for k in square_values]
    self.linear_term = [
        _signed(algebra.format_expanded_coefficients(unit, 0, k, 0)) if k else ""
        for k in range(-self.max_linear, self.max_linear + 1)
    ]
    self.constant_term = [
        f"{k:+d}" if k else "" for k in range(-self.max_constant, self.max_constant + 1)
    ]

  @staticmethod
  def _outer(k: int) -> str:
    return {1: "", -1: "-"}.get(k, f"{k}*")

  def factor_ids(self, factors: np.ndarray) -> np.ndarray:
    coefficient_offsets = factors[:, 0] - self.coefficient_low
    return coefficient_offsets * self.constant_span + (factors[:, 1] - self.constant_low)

  def factored(self, rows: SampledRows, trig: np.ndarray) -> list[str]:
    """The factored sides, with the placeholder for the unit."""
    n = len(rows.unit_ids)
    first_ids, second_ids = self.factor_ids(rows.first), self.factor_ids(rows.second)
    swap = self.rank[second_ids] < self.rank[first_ids]
    low_ids = np.where(swap, second_ids, first_ids)
    high_ids = np.where(swap, first_ids, second_ids)
    first_zero, second_zero = rows.first[:, 1] == 0, rows.second[:, 1] == 0
    out = [""] * n
    sum_text = self.sum_text
    both = ~first_zero & ~second_zero
    square = both & (first_ids == second_ids)
    distinct = both & ~square
    for i, low, high in zip(np.flatnonzero(distinct).tolist(), low_ids[distinct].tolist(),
                            high_ids[distinct].tolist()):
      out[i] = sum_text[low] + "*" + sum_text[high]
    for i, low in zip(np.flatnonzero(square).tolist(), low_ids[square].tolist()):
      out[i] = sum_text[low] + "**2"
    # k*u*(c*u+d): the outer k is the coefficient of the factor without constant.
    one_zero = first_zero ^ second_zero
    outer = np.where(first_zero, rows.first[:, 0], rows.second[:, 0]) + self.max_square
    linear_ids = np.where(first_zero, second_ids, first_ids)
    outer_text = self.outer_text
    # A variable sorts before a sum, a function after it: `k*x*(...)`, `k*(...)*sin(x)`.
    variable_rows = one_zero & ~trig
    for i, k, sid in zip(np.flatnonzero(variable_rows).tolist(), outer[variable_rows].tolist(),
                         linear_ids[variable_rows].tolist()):
      out[i] = outer_text[k] + "@*" + sum_text[sid]
    function_rows = one_zero & trig
    for i, k, sid in zip(np.flatnonzero(function_rows).tolist(), outer[function_rows].tolist(),
                         linear_ids[function_rows].tolist()):
      out[i] = outer_text[k] + sum_text[sid] + "*@"
    monomial = first_zero & second_zero
    products = rows.first[:, 0] * rows.second[:, 0] + self.max_square
    monomial_text = self.monomial_text
    for i, k in zip(np.flatnonzero(monomial).tolist(), products[monomial].tolist()):
      out[i] = monomial_text[k]
    return out

  def expanded(self, rows: SampledRows) -> list[str]:
    """The expanded sides, with the placeholder for the unit."""
    a, b = rows.first[:, 0], rows.first[:, 1]
    c, d = rows.second[:, 0], rows.second[:, 1]
    squares, linears, constants = a * c, a * d + b * c, b * d
    # The printer's quirk: `-k*u**2 + m` (no linear term, m > 0) prints `m-k*u**2`.
    quirk = (linears == 0) & (squares < 0) & (constants > 0)
    square_text = self.monomial_text
    linear_term, constant_term = self.linear_term, self.constant_term
    out = [
        square_text[k2] + linear_term[k1] + constant_term[k0]
        for k2, k1, k0 in zip((squares + self.max_square).tolist(),
                              (linears + self.max_linear).tolist(),
                              (constants + self.max_constant).tolist())
    ]
    for i, k2, k0 in zip(np.flatnonzero(quirk).tolist(), squares[quirk].tolist(),
                         constants[quirk].tolist()):
      out[i] = f"{k0}{square_text[k2 + self.max_square]}"
    return out

  def lines(self, rows: SampledRows) -> list[str]:
    """`factored=expanded` lines of the rows."""
    factored = self.factored(rows, rows.is_trig)
    templates = [f + "=" + e for f, e in zip(factored, self.expanded(rows))]
    out = [""] * len(templates)
    order = np.argsort(rows.unit_ids, kind="stable")
    boundaries = np.searchsorted(rows.unit_ids[order], np.arange(len(algebra.UNITS) + 1))
    for u, unit in enumerate(algebra.UNITS):
      indices = order[boundaries[u]:boundaries[u + 1]].tolist()
      if not indices:
        continue
      block = "\n".join([templates[i] for i in indices])
      filled = block.replace(self._PLACEHOLDER, unit).split("\n")
      for i, line in zip(indices, filled):
        out[i] = line
    return out


def coefficient_probabilities(config: GeneratorConfig = DEFAULT_CONFIG) -> dict[int, float]:
  """The probability of each coefficient of u that `_sample_factors` draws."""
  values = nonzero_values(config.coefficient_range).tolist()
  drawn = (1 - config.unit_coefficient_probability) / len(values)
  probabilities = {value: drawn for value in values}
  probabilities[1] = probabilities.get(1, 0.0) + config.unit_coefficient_probability
  return probabilities


def generate_lines(n: int, seed: int, config: GeneratorConfig = DEFAULT_CONFIG) -> list[str]:
  """n `factored=expanded` lines (without newline), deterministic for a seed.

  The lines are a function of (n, seed, config), and the first n lines of a
  seed do not depend on n (`sample_rows`). `row_mix.mixed_lines` makes lines
  with more of some classes of rows, for training.
  """
  return print_lines(sample_rows(n, seed, config), config)


def print_lines(rows: SampledRows, config: GeneratorConfig = DEFAULT_CONFIG) -> list[str]:
  """The `factored=expanded` lines of sampled rows, printed as the data prints them."""
  return _RowPrinter(config).lines(rows) if len(rows.unit_ids) else []
