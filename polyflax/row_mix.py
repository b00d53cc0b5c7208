"""Training lines with more of the rows models get wrong: classes of rows, and mixes of them.

The data's own lines come from `generate`. A training stream may replace a
share of them with rows of a class (`ROW_CLASSES`: the linear term
cancelling, nearly cancelling, or the largest sums), each class drawn from
the generator's own distribution conditioned on the class, so the rows look
like the data's, only more of them. Validation and test splits keep the
data's own mix.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from polyflax.generate import (DEFAULT_CONFIG, GeneratorConfig, SampledRows,
                               coefficient_probabilities, nonzero_values, print_lines,
                               sample_rows, sample_units)


def linear_sums(rows: SampledRows) -> np.ndarray:
  """Per row, s = a*d + b*c: the linear coefficient of (a*u + b)*(c*u + d)."""
  return rows.first[:, 0] * rows.second[:, 1] + rows.first[:, 1] * rows.second[:, 0]


def _is_two_binomials(b: np.ndarray, d: np.ndarray) -> np.ndarray:
  return (b != 0) & (d != 0)


# The row classes a training stream can hold more of than the data does, each
# a condition on the factors (a, b, c, d) of two binomials, s = a*d + b*c: the
# rows whose linear coefficient models get wrong most (docs/cpu_recipe.md).
ROW_CLASSES = {
    # The linear term cancels: `(5*h-19)*(5*h+19)=25*h**2-361` (s = 0).
    "cancelling": lambda s: s == 0,
    # a*d and b*c nearly cancel (1 <= |s| <= 9): the sign of a small
    # difference of two large products decides the sign printed.
    "near_cancelling": lambda s: (np.abs(s) >= 1) & (np.abs(s) <= 9),
    # The largest sums (|s| >= 300): only at the range's edges (|a|, |c| >= 7
    # and |b|, |d| >= 25), where the data holds few rows.
    "edge": lambda s: np.abs(s) >= 300,
}


def row_class_of(rows: SampledRows, row_class: str) -> np.ndarray:
  """Per row, whether it is two binomials in `row_class` (a key of `ROW_CLASSES`)."""
  b, d = rows.first[:, 1], rows.second[:, 1]
  return _is_two_binomials(b, d) & ROW_CLASSES[row_class](linear_sums(rows))


def is_cancelling(rows: SampledRows) -> np.ndarray:
  """Per row, whether it is a product of two binomials whose linear term cancels.

  (a*u + b)*(c*u + d) with b, d != 0 and a*d + b*c = 0: the expansion has
  no linear term, e.g. `361-25*h**2` or `18*o**2-242`.
  """
  return row_class_of(rows, "cancelling")


def class_pairs(row_class: str,
                config: GeneratorConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
  """Every factor pair of `row_class` the sampler can draw, with its probability among them.

  Returns (pairs, probabilities): pairs is a (k, 4) int64 array of
  (a, b, c, d), the factors (a*u + b, c*u + d) in the order they are drawn,
  two binomials (b, d != 0) in the class (`ROW_CLASSES`); probabilities
  (k,) float64, summing to 1, is the sampler's distribution of two drawn
  factors conditioned on being such a pair (a coefficient's weight times the
  other's: the constants are uniform). So rows drawn from it are the
  generator's own rows of that class, only more of them.
  """
  if row_class not in ROW_CLASSES:
    raise ValueError(f"unknown row class {row_class!r}: one of {', '.join(ROW_CLASSES)}")
  coefficient_probability = coefficient_probabilities(config)
  coefficients = np.array(sorted(coefficient_probability), dtype=np.int64)
  constants = nonzero_values(config.constant_range)
  a, b, c, d = np.meshgrid(coefficients, constants, coefficients, constants, indexing="ij")
  chosen = ROW_CLASSES[row_class](a * d + b * c)
  pairs = np.stack([a[chosen], b[chosen], c[chosen], d[chosen]], axis=1)
  if not len(pairs):
    raise ValueError(f"the generator {config} cannot draw a {row_class} pair")
  weight_of = np.array([coefficient_probability[int(k)] for k in coefficients])
  index_of = {int(k): i for i, k in enumerate(coefficients)}
  weights = (weight_of[[index_of[int(k)] for k in pairs[:, 0]]]
             * weight_of[[index_of[int(k)] for k in pairs[:, 2]]])
  return pairs, weights / weights.sum()


def cancelling_pairs(config: GeneratorConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
  """`class_pairs("cancelling", config)`: the pairs whose linear term cancels."""
  return class_pairs("cancelling", config)


def sample_class_rows(rng: np.random.Generator, n: int, row_class: str,
                      config: GeneratorConfig = DEFAULT_CONFIG) -> SampledRows:
  """Draws n rows of `row_class` (see `ROW_CLASSES`), as the generator draws them.

  The unit is drawn as for every row, the factors from `class_pairs`: the
  generator's distribution conditioned on the class, drawn exactly rather
  than by rejection (only about 1 row in 200 cancels).
  """
  pairs, probabilities = class_pairs(row_class, config)
  unit_ids = sample_units(rng, n, config)
  chosen = pairs[rng.choice(len(pairs), size=n, p=probabilities)]
  return SampledRows(unit_ids=unit_ids, first=chosen[:, :2].copy(), second=chosen[:, 2:].copy())


def sample_cancelling_rows(rng: np.random.Generator, n: int,
                           config: GeneratorConfig = DEFAULT_CONFIG) -> SampledRows:
  """Draws n rows whose linear term cancels: `sample_class_rows(rng, n, "cancelling", config)`."""
  return sample_class_rows(rng, n, "cancelling", config)


@dataclasses.dataclass(frozen=True)
class RowMix:
  """Shares of a stream's lines replaced by rows of a class (`ROW_CLASSES`), each in [0, 1).

  The rows left are the generator's own. The default, all 0, is the data's
  own mix. The field names are the config's and the stream state's
  (`generated_<field>`, see `state_fields`).
  """
  cancel_fraction: float = 0.0  # rows whose linear term cancels ("cancelling")
  near_cancel_fraction: float = 0.0  # rows with 1 <= |s| <= 9 ("near_cancelling")
  edge_fraction: float = 0.0  # rows with |s| >= 300 ("edge")

  def __post_init__(self):
    for field, share in self.shares().items():
      if (not isinstance(share, (int, float)) or isinstance(share, bool)
          or not 0.0 <= share < 1.0):
        raise ValueError(f"{field} must be in [0, 1), got {share!r}")
    if sum(self.shares().values()) >= 1.0:
      raise ValueError(f"the row mix's fractions must sum to less than 1, got {self.shares()}")

  def shares(self) -> dict[str, float]:
    """{field: share} in the order rows are replaced."""
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

  def state_fields(self) -> dict[str, float]:
    """{"generated_<field>": share} of the shares not 0: what a stream's state records."""
    return {f"generated_{field}": float(share) for field, share in self.shares().items() if share}

  @classmethod
  def state_keys(cls) -> tuple[str, ...]:
    """The keys `state_fields` may hold, in order."""
    return tuple(f"generated_{field}" for field in cls().shares())

  @classmethod
  def from_config(cls, config) -> "RowMix":
    """The mix of a run's config (`generated_cancel_fraction`, ...)."""
    return cls(**{field: config.get(f"generated_{field}", 0.0)
                  for field in cls().shares()})


# Each row class's field of `RowMix`, and the constant mixed into the seed of
# its rows in `generate_lines` (any distinct constants would do).
_MIX_CLASSES = {"cancel_fraction": ("cancelling", 0xCA9C),
                "near_cancel_fraction": ("near_cancelling", 0x9EA4),
                "edge_fraction": ("edge", 0xED6E)}


def mixed_lines(n: int, seed: int, mix: RowMix,
                config: GeneratorConfig = DEFAULT_CONFIG) -> list[str]:
  """n `factored=expanded` lines (without newline), deterministic for a seed.

  Args:
    n: how many lines.
    seed: the lines are a function of (n, seed, mix, config).
    mix: for each class, round(share * n) of the rows, at places drawn from
      the seed (distinct for every class), are replaced by rows drawn from
      `sample_class_rows`, to train on more of the rows models get wrong.
      The rows left are the generator's own (about 0.35% of which cancel).
      The default: exactly the generator's rows, so the first n lines of a
      seed do not depend on n; with a mix, they do. The cancelling rows come
      first and are drawn as before the other classes existed, so a mix of
      only cancelling rows makes the same lines as it always did.
    config: the generating process.
  """
  if n == 0:
    return []
  rows = sample_rows(n, seed, config)
  free = np.ones(n, dtype=bool)  # places not yet replaced
  for field, share in mix.shares().items():
    replaced = round(share * n)
    if not replaced:
      continue
    row_class, tag = _MIX_CLASSES[field]
    rng = np.random.default_rng([seed, tag])
    places = np.flatnonzero(free)[rng.choice(int(free.sum()), size=replaced, replace=False)]
    free[places] = False
    drawn = sample_class_rows(rng, replaced, row_class, config)
    rows.unit_ids[places] = drawn.unit_ids
    rows.first[places] = drawn.first
    rows.second[places] = drawn.second
  return print_lines(rows, config)
