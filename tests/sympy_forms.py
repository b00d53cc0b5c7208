"""How sympy writes the data's expressions: the reference the algebra's tests check against."""

import sympy


def sympy_unit(unit: str) -> sympy.Expr:
  if "(" in unit:
    return getattr(sympy, unit[:3])(sympy.Symbol(unit[4]))
  return sympy.Symbol(unit)


def sympy_factored(unit: str, first: tuple[int, int], second: tuple[int, int]) -> str:
  """How sympy prints the product of the two factors (as the original data did)."""
  u = sympy_unit(unit)
  return str((first[0] * u + first[1]) * (second[0] * u + second[1])).replace(" ", "")


def sympy_expanded(text: str) -> str:
  return str(sympy.expand(sympy.sympify(text))).replace(" ", "")
