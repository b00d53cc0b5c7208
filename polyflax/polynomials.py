"""Exact polynomials of the data set, and their printing, with no dependencies.

Every expression in the data is a polynomial of degree at most 2 with integer
coefficients in one *unit* u: a variable (one of `a c h i j k n o s t x y z`) or
`sin(v)`, `cos(v)` or `tan(v)` of one variable. This module holds such
polynomials exactly (`Polynomial`, and `FactoredForm` for a product of two
linear factors), compares them algebraically and prints them back exactly as
the original data set was printed (by sympy's `str`, spaces removed; sympy
itself is not needed here):

* `format_expanded` prints the expansion (`6*t**2-122*t-84`, `98-32*z**2`).
* `format_factored` prints a product of two linear factors
  (`(21-t)*(-6*t-4)`, `5*(27-6*sin(j))*sin(j)`, `-7*sin(i)**2`, `(z+3)**2`).

The printing rules (term order, the constant-first quirk, the order of the
factors) were learnt by experiment with sympy and checked against it for every
pair of factors of the data set's ranges; `tests/test_polynomials.py` keeps
checking them on samples. Reading expressions into these values is
`polyflax/algebra.py`'s job.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

VARIABLES = tuple("achijknostxyz")
FUNCTIONS = ("sin", "cos", "tan")
UNITS = VARIABLES + tuple(f"{fn}({var})" for fn in FUNCTIONS for var in VARIABLES)

# (coefficient of u, constant): the factor c*u + d.
LinearFactor = tuple[int, int]


class AlgebraError(ValueError):
  """An expression that is not a polynomial of this algebra.

  Attributes:
    reason: what is wrong, e.g. "unknown token 'b'".
    text: the expression (possibly shortened for the message).
    position: 1-based character position of the problem in `text`, or None.
  """

  def __init__(self, reason: str, text: str = "", position: int | None = None):
    self.reason = reason
    self.text = text
    self.position = position
    shown = text if len(text) <= 60 else text[:57] + "..."
    where = f" at position {position}" if position is not None else ""
    super().__init__(f"{reason}{where} in '{shown}'" if text else f"{reason}{where}")


@dataclasses.dataclass(frozen=True, slots=True)
class Polynomial:
  """c2*u**2 + c1*u + c0 with exact integer coefficients.

  Instances are canonical: a constant polynomial has the empty unit, so that
  `==` and `hash` are algebraic equivalence.

  Attributes:
    unit: "x", "sin(x)", ...; "" for a constant.
    coefficients: (c2, c1, c0), the coefficients of u**2, u and 1.
  """

  unit: str
  coefficients: tuple[int, int, int]

  def __post_init__(self):
    c2, c1, c0 = self.coefficients
    if type(self.coefficients) is not tuple:  # pylint: disable=unidiomatic-typecheck
      object.__setattr__(self, "coefficients", (int(c2), int(c1), int(c0)))
    if self.unit and c2 == 0 and c1 == 0:
      object.__setattr__(self, "unit", "")

  @classmethod
  def constant(cls, value: int) -> Polynomial:
    return cls("", (0, 0, value))

  @classmethod
  def of_unit(cls, unit: str) -> Polynomial:
    return cls(unit, (0, 1, 0))

  @property
  def degree(self) -> int:
    """Degree in u; 0 for constants, including the zero polynomial."""
    c2, c1, _ = self.coefficients
    return 2 if c2 else (1 if c1 else 0)

  def __neg__(self) -> Polynomial:
    c2, c1, c0 = self.coefficients
    return Polynomial(self.unit, (-c2, -c1, -c0))

  def __add__(self, other: Polynomial) -> Polynomial:
    unit = _common_unit(self, other)
    return Polynomial(unit, tuple(p + q for p, q in zip(self.coefficients, other.coefficients)))

  def __sub__(self, other: Polynomial) -> Polynomial:
    return self + (-other)

  def __mul__(self, other: Polynomial) -> Polynomial:
    unit = _common_unit(self, other)
    if self.degree + other.degree > 2:
      raise AlgebraError("degree above 2")
    p2, p1, p0 = self.coefficients
    q2, q1, q0 = other.coefficients
    return Polynomial(unit, (p2 * q0 + p1 * q1 + p0 * q2, p1 * q0 + p0 * q1, p0 * q0))

  def __str__(self) -> str:
    return format_expanded(self)


def _common_unit(p: Polynomial, q: Polynomial) -> str:
  if p.unit and q.unit and p.unit != q.unit:
    raise AlgebraError(f"mixed units '{p.unit}' and '{q.unit}'")
  return p.unit or q.unit


class FactoredForm(NamedTuple):
  """A product of two linear factors (a*u + b) * (c*u + d) in one unit.

  Attributes:
    unit: the unit u.
    first: (a, b).
    second: (c, d).
  """

  unit: str
  first: LinearFactor
  second: LinearFactor

  def product_coefficients(self) -> tuple[int, int, int]:
    """(c2, c1, c0) of the product."""
    (a, b), (c, d) = self.first, self.second
    return a * c, a * d + b * c, b * d

  def product(self) -> Polynomial:
    return Polynomial(self.unit, self.product_coefficients())

  def expanded(self) -> str:
    """`format_expanded` of the product."""
    return format_expanded_coefficients(self.unit, *self.product_coefficients())


def refactorizations(form: FactoredForm, max_unit_coefficient: int) -> list[FactoredForm]:
  """Every way of writing `form`'s product as (a*u+b)*(c*u+d) with |a|, |c| <= the bound.

  A product of two linear factors with integer coefficients has no other
  such factors than its own with their integer contents and signs shared
  out differently (Gauss's lemma: the factors' primitive parts are unique up
  to sign): `(2*x+4)*(x+1)` is also `(x+2)*(2*x+2)` and `(-x-2)*(-2*x-2)`.
  These are listed with the factors in `form`'s order (so a factor without
  constant stays first), `form` among them when it fits the bound. The bound
  keeps the list short: the contents multiply to at most its square.
  """
  (a, b), (c, d) = form.first, form.second
  if a * c == 0 or abs(a * c) > max_unit_coefficient**2:
    return []
  first_content, second_content = math.gcd(a, b), math.gcd(c, d)
  p, q = (a // first_content, b // first_content), (c // second_content, d // second_content)
  content = first_content * second_content
  forms = []
  for s in range(1, content + 1):
    if content % s:
      continue
    t = content // s
    for sign in (1, -1):
      first, second = (sign * s * p[0], sign * s * p[1]), (sign * t * q[0], sign * t * q[1])
      if abs(first[0]) <= max_unit_coefficient and abs(second[0]) <= max_unit_coefficient:
        forms.append(FactoredForm(form.unit, first, second))
  return forms


# ---------------------------------------------------------------------------
# Printing.


def _scaled_unit(coefficient: int, unit_power: str) -> str:
  """Prints coefficient*unit_power as sympy does (no spaces)."""
  if coefficient == 1:
    return unit_power
  if coefficient == -1:
    return "-" + unit_power
  return f"{coefficient}*{unit_power}"


def format_expanded(poly: Polynomial) -> str:
  """Prints `poly` exactly as sympy prints its expansion (spaces removed).

  Terms in descending powers with zero terms dropped and coefficients 1 and
  -1 written as `u` and `-u`; when exactly two terms remain, a positive
  constant and a negative term, the constant comes first (`98-32*z**2`,
  `17-2*i`).
  """
  return format_expanded_coefficients(poly.unit, *poly.coefficients)


def format_expanded_coefficients(unit: str, c2: int, c1: int, c0: int) -> str:
  """`format_expanded` of c2*unit**2 + c1*unit + c0 (no Polynomial needed)."""
  terms = []
  if c2:
    terms.append(_scaled_unit(c2, f"{unit}**2"))
  if c1:
    terms.append(_scaled_unit(c1, unit))
  if not terms:
    return str(c0)
  if c0:
    if len(terms) == 1 and c0 > 0 and (c2 < 0 or c1 < 0):
      return f"{c0}{terms[0]}"
    terms.append(str(c0))
  out = terms[0]
  for term in terms[1:]:
    out += term if term[0] == "-" else "+" + term
  return out


def format_linear(factor: LinearFactor, unit: str) -> str:
  """Prints the sum c*u + d (c != 0, d != 0) as sympy does."""
  c, d = factor
  if c < 0 < d:
    return f"{d}{_scaled_unit(c, unit)}"
  return f"{_scaled_unit(c, unit)}{d:+d}"


def linear_sort_key(factor: LinearFactor) -> tuple[tuple[int, int], tuple[int, int]]:
  """Sort key of a sum c*u + d among the factors of a product, as in sympy.

  sympy orders a product's factors by their sort keys: a sum compares its
  terms in printed order, a number sorting before a term in u, numbers by
  value and terms in u by their coefficient. A sum printed constant-first
  (`7-3*z`, for c < 0 < d) therefore comes before any sum printed u-first.
  (A variable sorts before a sum and sin/cos/tan after it.)
  """
  c, d = factor
  if c < 0 < d:
    return (0, d), (1, c)
  return (1, c), (0, d)


def format_factored(unit: str, first: LinearFactor, second: LinearFactor) -> str:
  """Prints (a*u + b) * (c*u + d) exactly as sympy prints the product.

  Args:
    unit: the unit, a variable "x" or "sin(x)", "cos(x)", "tan(x)".
    first: (a, b) with a != 0.
    second: (c, d) with c != 0.

  Returns:
    For example `(21-t)*(-6*t-4)`, `(x+3)**2`, `-3*k*(2*k-5)`,
    `5*(27-6*sin(j))*sin(j)`, `-(2*cos(x)-3)*cos(x)` or `-7*sin(i)**2`.

  Raises:
    ValueError: if a factor is constant.
  """
  (a, b), (c, d) = first, second
  if a == 0 or c == 0:
    raise ValueError(f"factors must be linear in the unit, got {first} and {second}")
  if b == 0 and d == 0:
    return _scaled_unit(a * c, f"{unit}**2")
  if b == 0 or d == 0:
    outer, linear = (a, second) if b == 0 else (c, first)
    sum_text = f"({format_linear(linear, unit)})"
    if "(" in unit:  # A function sorts after a sum: `k*(c*sin(x)+d)*sin(x)`.
      body = f"{sum_text}*{unit}"
    else:  # A variable sorts before a sum: `k*x*(c*x+d)`.
      body = f"{unit}*{sum_text}"
    if outer == 1:
      return body
    if outer == -1:
      return "-" + body
    return f"{outer}*{body}"
  if first == second:
    return f"({format_linear(first, unit)})**2"
  if linear_sort_key(second) < linear_sort_key(first):
    first, second = second, first
  return f"({format_linear(first, unit)})*({format_linear(second, unit)})"


# ---------------------------------------------------------------------------
# Shapes of a product.

SHAPES = ("binomials", "k_u_binomial", "monomial", "square")


def shape_of(form: FactoredForm) -> str:
  """One of `SHAPES` for a product of two linear factors."""
  b, d = form.first[1], form.second[1]
  if b == 0 and d == 0:
    return "monomial"
  if b == 0 or d == 0:
    return "k_u_binomial"
  if form.first == form.second:
    return "square"
  return "binomials"


def linear_term_cancels(form: FactoredForm) -> bool:
  """Whether the two cross terms of (a*u+b)*(c*u+d) cancel: a*d + b*c = 0, none of them zero.

  Such a product has no linear term although each factor has one and a
  constant (`(19-5*h)*(19+5*h)` -> `361-25*h**2`); k*u**2 and k*u*(c*u+d),
  whose linear term is absent or whole, never cancel.
  """
  (a, b), (c, d) = form.first, form.second
  return a * b * c * d != 0 and a * d + b * c == 0


def is_trig(text: str) -> bool:
  """Whether the expression uses sin, cos or tan (a plain text test)."""
  return "sin(" in text or "cos(" in text or "tan(" in text
