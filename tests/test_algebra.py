"""Tests of parsing into the exact algebra, against sympy (the printer the original data used)."""

import pytest
import sympy

from polyflax import algebra
from polyflax import generate
from sympy_forms import sympy_expanded, sympy_factored, sympy_unit


def sympy_poly(poly: algebra.Polynomial) -> sympy.Expr:
  c2, c1, c0 = poly.coefficients
  u = sympy_unit(poly.unit) if poly.unit else sympy.Integer(0)
  return c2 * u**2 + c1 * u + c0


# Configurations that make each shape and the trig units common.
SHAPE_CONFIGS = {
    "default": generate.GeneratorConfig(),
    "trig": generate.GeneratorConfig(trig_probability=1.0),
    "binomials": generate.GeneratorConfig(zero_constant_probability=0.0, trig_probability=0.2),
    "k_u_binomial": generate.GeneratorConfig(zero_constant_probability=0.5, trig_probability=0.3),
    "monomial": generate.GeneratorConfig(zero_constant_probability=1.0, trig_probability=0.3),
    "square": generate.GeneratorConfig(square_probability=1.0, zero_constant_probability=0.0,
                                       trig_probability=0.3),
}


@pytest.mark.parametrize("name", sorted(SHAPE_CONFIGS))
def test_generated_lines_match_sympy(name):
  config = SHAPE_CONFIGS[name]
  n = 600
  rows = generate.sample_rows(n, seed=11, config=config)
  lines = generate.generate_lines(n, seed=11, config=config)
  shapes = set()
  for line, form in zip(lines, rows.forms()):
    factored, expanded = line.split("=")
    assert factored == sympy_factored(*form), line
    assert expanded == sympy_expanded(factored), line
    shapes.add(algebra.row_shape(factored))
  if name in ("monomial", "square"):
    assert shapes == {name}
  elif name in algebra.SHAPES:
    assert name in shapes
  if name == "trig":
    assert all(algebra.is_trig(line) for line in lines)


def test_real_lines_print_back_identically(real_dev_lines):
  counts = dict.fromkeys(algebra.SHAPES, 0)
  for line in real_dev_lines:
    factored, expanded = line.split("=")
    form = algebra.parse_factored(factored)
    assert algebra.format_factored(*form) == factored, line
    assert algebra.expand(factored) == expanded, line
    assert algebra.parse_polynomial(expanded) == form.product(), line
    assert algebra.parse_polynomial(factored) == form.product(), line
    counts[algebra.shape_of(form)] += 1
  assert all(counts.values()), counts


def test_fast_and_general_factored_parsers_agree(real_dev_lines):
  lines = generate.generate_lines(3000, seed=5) + list(real_dev_lines[:3000])
  for config in SHAPE_CONFIGS.values():
    lines += generate.generate_lines(200, seed=6, config=config)
  for line in lines:
    factored = line.split("=")[0]
    fast = algebra._fast_parse_factored(factored)  # pylint: disable=protected-access
    assert fast is not None, factored
    general = algebra._parse_factored_general(factored)  # pylint: disable=protected-access
    assert fast == general, factored


@pytest.mark.parametrize("text,expected", [
    ("(21-t)*(-6*t-4)", "6*t**2-122*t-84"),
    ("(7-4*z)*(4*z+7)", "49-16*z**2"),
    ("(17-2*i)*(i+8)", "-2*i**2+i+136"),
    ("(k-30)*(k+30)", "k**2-900"),
    ("(4-3*sin(x))*(3*sin(x)+4)", "16-9*sin(x)**2"),
    ("-x*(x-17)", "-x**2+17*x"),
    ("x*(1-x)", "-x**2+x"),
    ("-7*sin(i)**2", "-7*sin(i)**2"),
    ("(x+1)**2", "x**2+2*x+1"),
    ("17-2*i", "17-2*i"),
    ("-(x-17)", "17-x"),
    ("2*x-2*x+5", "5"),
    ("x-x", "0"),
    ("-5", "-5"),
    ("(tan(a))", "tan(a)"),
])
def test_expand_examples(text, expected):
  assert algebra.expand(text) == expected
  assert sympy_expanded(text) == expected


@pytest.mark.parametrize("text", [
    "(x+1)*(x-1)", "x*x", "-(x+2)*(3-x)", "3*(x+1)*x", "(2*x+3)**2", "((x))*(-(-x))", "x**2+x+1",
    "-x**2", "2*3*x*4", "(1+2)*x**2-x+7-(x+3)", "+x", "--x", "2*-x", "4**2",
    "(cos(c)+1)*(cos(c)-1)",
    "  x +\t1 ",
])
def test_parse_polynomial_matches_sympy(text):
  poly = algebra.parse_polynomial(text)
  assert sympy.expand(sympy_poly(poly) - sympy.sympify(text)) == 0
  assert algebra.format_expanded(poly) == sympy_expanded(text)


@pytest.mark.parametrize("text,fragment,position", [
    ("", "empty expression", None),
    ("   ", "empty expression", None),
    ("x*y", "mixed units 'x' and 'y'", 3),
    ("x+sin(x)", "mixed units 'x' and 'sin(x)'", 3),
    ("x**3", "exponent 3", 4),
    ("x**x", "expected the exponent 2", 4),
    ("x**2**2", "chained exponents", 5),
    ("x*x*x", "degree above 2", 4),
    ("(x**2)**2", "degree above 2", 7),
    ("x**2*(x+1)", "degree above 2", 5),
    ("2*b+1", "unknown token 'b'", 3),
    ("x=1", "unknown token '='", 2),
    ("x^2", "unknown token '^'", 2),
    ("sin x", "'sin' not followed by a variable", 1),
    ("sin(2*x)", "'sin' not followed by a variable", 1),
    ("(x+1", "missing ')'", 5),
    ("x+1)", "unexpected ')'", 4),
    ("x+", "unexpected end", 3),
    ("*x", "unexpected '*'", 1),
    ("x(x+1)", "unexpected '('", 2),
    ("()", "unexpected ')'", 2),
])
def test_parse_errors_say_what_and_where(text, fragment, position):
  with pytest.raises(algebra.AlgebraError) as raised:
    algebra.parse_polynomial(text)
  message = str(raised.value)
  assert fragment in message
  assert "\n" not in message
  assert raised.value.position == position
  if position is not None:
    assert f"at position {position}" in message


def test_overlong_inputs_are_refused_before_they_are_tokenized(monkeypatch):
  # Refusing by length first keeps the work independent of the input's size
  # (its speed is not timed here).
  def tokenize_nothing(text):
    raise AssertionError(f"tokenized an input of {len(text):,} characters")

  monkeypatch.setattr(algebra, "tokenize", tokenize_nothing)
  with pytest.raises(algebra.AlgebraError, match="longer than 256 characters"):
    algebra.parse_polynomial("x+" * 1_000_000 + "1")  # a valid polynomial, but too long
  with pytest.raises(algebra.AlgebraError, match="longer than 256 characters"):
    algebra.parse_factored("(" * 100_000)


def test_deep_nesting_is_refused_at_the_depth_cap():
  with pytest.raises(algebra.AlgebraError, match="nested deeper than 32"):
    algebra.parse_polynomial("(" * 100 + "x" + ")" * 100)
  with pytest.raises(algebra.AlgebraError, match="nested deeper than 32"):
    algebra.parse_polynomial("(" * 33 + "x" + ")" * 33)
  assert algebra.parse_polynomial("(" * 32 + "x" + ")" * 32) == algebra.parse_polynomial("x")


def test_polynomial_equality_is_algebraic_equivalence():
  assert algebra.parse_polynomial("(x+1)*(x-1)") == algebra.parse_polynomial("x**2-1")
  assert algebra.parse_polynomial("(s-2)**2") == algebra.parse_polynomial("s**2-4*s+4")
  assert algebra.parse_polynomial("x**2") != algebra.parse_polynomial("y**2")
  three = algebra.Polynomial.constant(3)
  assert algebra.parse_polynomial("x-x+3") == algebra.parse_polynomial("y-y+3") == three
  assert algebra.parse_polynomial("sin(x)**2") != algebra.parse_polynomial("cos(x)**2")
  polys = {algebra.parse_polynomial("2*x*(x+3)"), algebra.parse_polynomial("2*x**2+6*x")}
  assert len(polys) == 1
  assert algebra.parse_polynomial("x-x").unit == ""


@pytest.mark.parametrize("text,shape", [
    ("(21-t)*(-6*t-4)", "binomials"),
    ("-3*k*(2*k-5)", "k_u_binomial"),
    ("x*(1-x)", "k_u_binomial"),
    ("5*(27-6*sin(j))*sin(j)", "k_u_binomial"),
    ("-(2*cos(x)-3)*cos(x)", "k_u_binomial"),
    ("-7*sin(i)**2", "monomial"),
    ("x**2", "monomial"),
    ("(z+3)**2", "square"),
    ("(-x-1)**2", "square"),
])
def test_row_shape_and_trig(text, shape):
  assert algebra.row_shape(text) == shape
  assert algebra.is_trig(text) == any(fn in text for fn in algebra.FUNCTIONS)
  form = algebra.parse_factored(text)
  assert algebra.format_factored(*form) == text


@pytest.mark.parametrize("text", ["x+1", "x**2+1", "(x+1)*(x+2)*(x+3)", "3*(x+1)", "7", "x*y"])
def test_parse_factored_rejects_non_products(text):
  with pytest.raises(algebra.AlgebraError):
    algebra.parse_factored(text)
