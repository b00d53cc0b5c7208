"""Exact algebra of the polynomials in the data set, with no dependencies.

Every expression in the data is a polynomial of degree at most 2 with integer
coefficients in one *unit* u: a variable (one of `a c h i j k n o s t x y z`) or
`sin(v)`, `cos(v)` or `tan(v)` of one variable. This module parses such
expressions exactly, compares them algebraically and prints them back exactly
as the original data set was printed (by sympy's `str`, spaces removed; sympy
itself is not needed here):

* `format_expanded` prints the expansion (`6*t**2-122*t-84`, `98-32*z**2`).
* `format_factored` prints a product of two linear factors
  (`(21-t)*(-6*t-4)`, `5*(27-6*sin(j))*sin(j)`, `-7*sin(i)**2`, `(z+3)**2`).

The printing rules (term order, the constant-first quirk, the order of the
factors) were learnt by experiment with sympy and checked against it for every
pair of factors of the data set's ranges; `tests/test_algebra.py` keeps
checking them on samples.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import NamedTuple

VARIABLES = tuple("achijknostxyz")
FUNCTIONS = ("sin", "cos", "tan")
UNITS = VARIABLES + tuple(f"{fn}({var})" for fn in FUNCTIONS for var in VARIABLES)
# Longer inputs are refused before any work is done on them.
MAX_EXPRESSION_LENGTH = 256
# Deeper nesting of parentheses is refused (keeps the recursion bounded).
MAX_NESTING = 32

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


# ---------------------------------------------------------------------------
# Parsing.

# One token per match; the last alternatives catch what is not a token.
_TOKEN_RE = re.compile(
    r"(?P<num>[0-9]+)"
    r"|(?P<unit>(?:sin|cos|tan)\([achijknostxyz]\)|(?!sin|cos|tan)[achijknostxyz])"
    r"|(?P<op>\*\*|[-+*()])"
    r"|(?P<space>\s+)"
    r"|(?P<spaced>(?:sin|cos|tan)\(\s*[achijknostxyz]\s*\))"
    r"|(?P<func>sin|cos|tan)"
    r"|(?P<bad>.)", re.DOTALL)


# The same tokens without the error cases: when its matches cover the whole
# text, they are the tokens.
_FAST_TOKEN_RE = re.compile(
    r"\*\*|[-+*()]|[0-9]+|(?:sin|cos|tan)\([achijknostxyz]\)|(?!sin|cos|tan)[achijknostxyz]")
_TOKEN_KINDS = {
    **{digit: "num" for digit in "0123456789"},
    **{letter: "unit" for letter in VARIABLES},
    **{fn[0]: "unit" for fn in FUNCTIONS},
}


class _Token(NamedTuple):
  kind: str  # "num", "unit", "**", "+", "-", "*", "(", ")", "end"
  text: str
  position: int  # 1-based


def tokenize(text: str) -> list[_Token]:
  """Splits `text` into tokens; sin/cos/tan(v) become one "unit" token.

  Raises:
    AlgebraError: at the first character that starts no token.
  """
  pieces = _FAST_TOKEN_RE.findall(text)
  if sum(map(len, pieces)) == len(text):
    tokens = []
    position = 1
    for piece in pieces:
      kind = _TOKEN_KINDS.get(piece[0], piece)
      tokens.append(_Token(kind, piece, position))
      position += len(piece)
    tokens.append(_Token("end", "", position))
    return tokens
  tokens = []
  for match in _TOKEN_RE.finditer(text):
    kind = match.lastgroup
    token_text = match.group()
    if kind == "op":
      tokens.append(_Token(token_text, token_text, match.start() + 1))
    elif kind == "num" or kind == "unit":
      tokens.append(_Token(kind, token_text, match.start() + 1))
    elif kind == "spaced":
      unit = f"{token_text[:3]}({token_text[4:-1].strip()})"
      tokens.append(_Token("unit", unit, match.start() + 1))
    elif kind == "func":
      raise AlgebraError(f"'{token_text}' not followed by a variable in parentheses", text,
                         match.start() + 1)
    elif kind == "bad":
      raise AlgebraError(f"unknown token {token_text!r}", text, match.start() + 1)
  tokens.append(_Token("end", "", len(text) + 1))
  return tokens


# Coefficients (c2, c1, c0) of a polynomial in the parser's one unit.
_Coefficients = tuple[int, int, int]


def _degree(p: _Coefficients) -> int:
  return 2 if p[0] else (1 if p[1] else 0)


def _multiply(p: _Coefficients, q: _Coefficients) -> _Coefficients:
  return (p[0] * q[2] + p[1] * q[1] + p[2] * q[0], p[1] * q[2] + p[2] * q[1], p[2] * q[2])


class _Parser:
  """Recursive-descent parser over the tokens of one expression.

  Grammar (precedence as in Python):
    expression := term (("+" | "-") term)*
    term       := unary ("*" unary)*
    unary      := ("-" | "+") unary | power
    power      := primary ["**" integer]      (the integer must be 2)
    primary    := integer | unit | "(" expression ")"

  Values are coefficient triples in the expression's one unit, `self.unit`.
  """

  def __init__(self, text: str):
    if not text or not text.strip():
      raise AlgebraError("empty expression", text)
    if len(text) > MAX_EXPRESSION_LENGTH:
      raise AlgebraError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters",
                         text, MAX_EXPRESSION_LENGTH + 1)
    self.text = text
    self.tokens = tokenize(text)
    self.index = 0
    self.depth = 0
    self.unit = ""

  def error(self, reason: str, token: _Token | None = None) -> AlgebraError:
    token = token or self.tokens[self.index]
    return AlgebraError(reason, self.text, token.position)

  def peek_kind(self) -> str:
    return self.tokens[self.index].kind

  def advance(self) -> _Token:
    token = self.tokens[self.index]
    self.index += 1
    return token

  def expect_end(self) -> None:
    token = self.tokens[self.index]
    if token.kind != "end":
      raise self.error(f"unexpected {token.text!r}")

  def expression(self) -> _Coefficients:
    result = self.term()
    while self.peek_kind() in ("+", "-"):
      sign = 1 if self.advance().kind == "+" else -1
      right = self.term()
      result = (result[0] + sign * right[0], result[1] + sign * right[1],
                result[2] + sign * right[2])
    return result

  def term(self) -> _Coefficients:
    scale, factors, operators = self.term_factors()
    result = (0, 0, scale)
    for factor, operator in zip(factors, operators):
      if _degree(result) + _degree(factor) > 2:
        raise self.error("degree above 2", operator)
      result = _multiply(result, factor)
    return result

  def term_factors(self) -> tuple[int, list[_Coefficients], list[_Token]]:
    """Parses a term into its integer factor and its non-constant factors.

    Also returns, for each non-constant factor, the token to blame if the
    degree goes above 2 when it is multiplied in.
    """
    scale, factors, operators = 1, [], []
    operator = self.tokens[self.index]
    while True:
      more_scale, more = self.unary_factors()
      scale *= more_scale
      factors.extend(more)
      operators.extend([operator] * len(more))
      if self.peek_kind() != "*":
        return scale, factors, operators
      operator = self.advance()

  def unary_factors(self) -> tuple[int, list[_Coefficients]]:
    """Parses a signed power into its integer factor and non-constant factors."""
    sign = 1
    while self.peek_kind() in ("-", "+"):
      if self.advance().kind == "-":
        sign = -sign
    base = self.primary()
    exponent = 1
    if self.peek_kind() == "**":
      operator = self.advance()
      exponent_token = self.advance()
      if exponent_token.kind != "num":
        raise self.error("expected the exponent 2 after '**'", exponent_token)
      if exponent_token.text != "2":
        raise self.error(f"exponent {exponent_token.text} (only 2 is allowed)", exponent_token)
      if self.peek_kind() == "**":
        raise self.error("chained exponents", self.tokens[self.index])
      if _degree(base) == 2:
        raise self.error("degree above 2", operator)
      exponent = 2
    if _degree(base) == 0:
      return sign * base[2]**exponent, []
    if exponent == 2:
      return sign, [base, base]
    return sign, [base]

  def primary(self) -> _Coefficients:
    token = self.advance()
    kind = token.kind
    if kind == "num":
      return (0, 0, int(token.text))
    if kind == "unit":
      if self.unit != token.text:
        if self.unit:
          raise self.error(f"mixed units '{self.unit}' and '{token.text}'", token)
        self.unit = token.text
      return (0, 1, 0)
    if kind == "(":
      self.depth += 1
      if self.depth > MAX_NESTING:
        raise self.error(f"parentheses nested deeper than {MAX_NESTING}", token)
      inner = self.expression()
      closing = self.advance()
      if closing.kind != ")":
        reason = ("missing ')'" if closing.kind == "end" else
                  f"expected ')' but found {closing.text!r}")
        raise self.error(reason, closing)
      self.depth -= 1
      return inner
    if kind == "end":
      raise self.error("unexpected end of expression", token)
    raise self.error(f"unexpected {token.text!r}", token)


def parse_polynomial(text: str) -> Polynomial:
  """Parses any expression of the grammar into its exact polynomial.

  Accepts sums, products, parentheses, unary minus, integer literals, `**2`
  and the units of `UNITS`, factored or expanded (spaces are ignored).

  Raises:
    AlgebraError: on empty or over-long input, an unknown token, a syntax
      error, mixed units, an exponent other than 2 or a degree above 2.
  """
  parser = _Parser(text)
  result = parser.expression()
  parser.expect_end()
  return Polynomial(parser.unit, result)


_UNIT_RE_TEXT = r"[achijknostxyz]|(?:sin|cos|tan)\([achijknostxyz]\)"


def _linear_pattern(tag: str) -> str:
  """Regex of a linear sum as printed: `c*u+d`, `u-d`, `-u+d`, `d-c*u`, `d-u`."""
  return (rf"(?:(?P<c{tag}>-?[0-9]+\*|-)?(?P<u{tag}>{_UNIT_RE_TEXT})(?P<d{tag}>[+-][0-9]+)"
          rf"|(?P<e{tag}>[0-9]+)-(?P<f{tag}>[0-9]+\*)?(?P<v{tag}>{_UNIT_RE_TEXT}))")


# The printed shapes of a product of two linear factors: `(L)*(L)`, `(L)**2`,
# `k*u*(L)`, `k*u**2` and `k*(L)*u`.
_FAST_FACTORED_RE = re.compile(
    rf"\({_linear_pattern('1')}\)(?:\*\({_linear_pattern('2')}\)|(?P<sq>\*\*2))"
    rf"|(?P<k>-|-?[0-9]+\*)?"
    rf"(?:(?P<w>{_UNIT_RE_TEXT})(?:\*\({_linear_pattern('3')}\)|(?P<mono>\*\*2))"
    rf"|\({_linear_pattern('4')}\)\*(?P<t>{_UNIT_RE_TEXT}))")


def _coefficient(prefix: str | None) -> int:
  """The coefficient printed before a unit: None -> 1, '-' -> -1, '-5*' -> -5."""
  if not prefix:
    return 1
  if prefix == "-":
    return -1
  return int(prefix[:-1])


def _fast_linear(match: re.Match, tag: str) -> tuple[str, LinearFactor]:
  unit = match.group("u" + tag)
  if unit is not None:
    return unit, (_coefficient(match.group("c" + tag)), int(match.group("d" + tag)))
  coefficient = -_coefficient(match.group("f" + tag))
  return match.group("v" + tag), (coefficient, int(match.group("e" + tag)))


def _fast_parse_factored(text: str) -> FactoredForm | None:
  """Reads the printed shapes of `format_factored` with one regex.

  Returns None when `text` is not of one of those shapes (or has a zero
  coefficient), so that the general parser decides.
  """
  match = _FAST_FACTORED_RE.fullmatch(text)
  if match is None:
    return None
  if match.group("u1") is not None or match.group("v1") is not None:
    unit, first = _fast_linear(match, "1")
    if match.group("sq") is not None:
      second = first
    else:
      other_unit, second = _fast_linear(match, "2")
      if other_unit != unit:
        return None
  else:
    outer = _coefficient(match.group("k"))
    if match.group("mono") is not None:
      unit, first, second = match.group("w"), (outer, 0), (1, 0)
    elif match.group("w") is not None:
      unit = match.group("w")
      other_unit, second = _fast_linear(match, "3")
      first = (outer, 0)
    else:
      unit = match.group("t")
      other_unit, second = _fast_linear(match, "4")
      first = (outer, 0)
    if match.group("mono") is None and other_unit != unit:
      return None
  if first[0] == 0 or second[0] == 0:
    return None
  if first[1] != 0 and second[1] == 0:
    first, second = second, first
  return FactoredForm(unit, first, second)


def parse_factored(text: str) -> FactoredForm:
  """Parses a product of two linear factors into its factors.

  Integer factors (a leading minus, `5*`) are moved into a factor without a
  constant term when there is one (`5*x*(x+1)` -> (5, 0), (1, 1)), otherwise
  into the first factor; a square counts as two equal factors; a factor
  without constant term comes first. Whether `text` is spelt exactly as in
  the data set is checked by comparing it with
  `format_factored(*parse_factored(text))`.

  Raises:
    AlgebraError: if `text` does not parse or is not such a product.
  """
  fast = _fast_parse_factored(text) if len(text) <= MAX_EXPRESSION_LENGTH else None
  return fast if fast is not None else _parse_factored_general(text)


def _parse_factored_general(text: str) -> FactoredForm:
  """`parse_factored` with the general parser (any spelling of the product)."""
  parser = _Parser(text)
  scale, factors, _ = parser.term_factors()
  if parser.peek_kind() in ("+", "-"):
    raise parser.error("expected a product of two linear factors, found a sum")
  parser.expect_end()
  if len(factors) != 2 or any(_degree(factor) != 1 for factor in factors):
    raise AlgebraError("not a product of two linear factors", text)
  (_, a, b), (_, c, d) = factors
  if b != 0 and d == 0:
    (a, b), (c, d) = (c, d), (a, b)
  a, b = a * scale, b * scale
  return FactoredForm(parser.unit, (a, b), (c, d))


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
# Conveniences on printed rows.

SHAPES = ("binomials", "k_u_binomial", "monomial", "square")


def expand(factored_text: str) -> str:
  """The canonical expanded string of a factored (or any) expression."""
  fast = None
  if len(factored_text) <= MAX_EXPRESSION_LENGTH:
    fast = _fast_parse_factored(factored_text)
  return fast.expanded() if fast is not None else format_expanded(parse_polynomial(factored_text))


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


def row_shape(factored_text: str) -> str:
  """The shape of a factored side: one of `SHAPES`.

  "binomials" is (a*u+b)*(c*u+d), "k_u_binomial" is k*u*(c*u+d), "monomial"
  is k*u**2 and "square" is (a*u+b)**2.
  """
  return shape_of(parse_factored(factored_text))


def is_trig(text: str) -> bool:
  """Whether the expression uses sin, cos or tan (a plain text test)."""
  return "sin(" in text or "cos(" in text or "tan(" in text
