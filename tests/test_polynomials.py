"""Tests of the exact polynomials and their printing, against sympy (the data's printer)."""

import hypothesis
from hypothesis import strategies as st
import pytest

from polyflax import algebra
from polyflax import polynomials
from sympy_forms import sympy_factored, sympy_unit


def test_polynomial_arithmetic():
  x = polynomials.Polynomial.of_unit("x")
  one = polynomials.Polynomial.constant(1)
  assert (x + one) * (x - one) == polynomials.Polynomial("x", (1, 0, -1))
  assert str(-(x * x) + polynomials.Polynomial.constant(98)) == "98-x**2"
  with pytest.raises(polynomials.AlgebraError, match="degree above 2"):
    _ = x * x * x
  with pytest.raises(polynomials.AlgebraError, match="mixed units"):
    _ = x + polynomials.Polynomial.of_unit("y")


def test_is_trig():
  assert polynomials.is_trig("(cos(k)+22)*cos(k)")
  assert polynomials.is_trig("tan(a)**2")
  assert not polynomials.is_trig("(s-1)*(i+2)")


def test_format_factored_rejects_constant_factors():
  with pytest.raises(ValueError):
    polynomials.format_factored("x", (0, 3), (1, 2))


units = st.sampled_from(polynomials.UNITS)
small = st.integers(-200, 200)
nonzero = small.filter(bool)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(unit=units, c2=small, c1=small, c0=small)
def test_format_expanded_matches_sympy_beyond_data_ranges(unit, c2, c1, c0):
  poly = polynomials.Polynomial(unit, (c2, c1, c0))
  u = sympy_unit(unit)
  assert polynomials.format_expanded(poly) == str(c2 * u**2 + c1 * u + c0).replace(" ", "")
  assert algebra.parse_polynomial(polynomials.format_expanded(poly)) == poly


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(unit=units, a=nonzero, b=small, c=nonzero, d=small)
def test_format_factored_matches_sympy_beyond_data_ranges(unit, a, b, c, d):
  text = polynomials.format_factored(unit, (a, b), (c, d))
  assert text == sympy_factored(unit, (a, b), (c, d))
  assert polynomials.format_factored(unit, (c, d), (a, b)) == text
  form = algebra.parse_factored(text)
  assert form.product() == polynomials.FactoredForm(unit, (a, b), (c, d)).product()
  assert polynomials.format_factored(*form) == text


def test_refactorizations_are_every_integer_factorization_of_the_product():
  # In a box of small factors, the forms with the same product are exactly
  # the refactorizations of any one of them (in either factor order).
  box = [((a, b), (c, d)) for a in range(-4, 5) if a for b in range(-8, 9)
         for c in range(-4, 5) if c for d in range(-8, 9)]
  in_box = set(box)
  by_product = {}
  for first, second in box:
    by_product.setdefault(polynomials.FactoredForm("x", first, second).product_coefficients(),
                          set()).add((first, second))
  for first, second in box[::7]:
    form = polynomials.FactoredForm("x", first, second)
    found = polynomials.refactorizations(form, 4)
    assert form in found
    assert all(other.product() == form.product() for other in found)
    pairs = {(other.first, other.second) for other in found}
    pairs |= {(b, a) for a, b in pairs}
    assert pairs & in_box == by_product[form.product_coefficients()]
  assert polynomials.refactorizations(polynomials.FactoredForm("x", (10**50, 1), (1, 1)), 9) == []
