"""Parsing the expressions of the data set into exact polynomials (standard library only).

`parse_polynomial` reads any expression of the grammar (sums, products,
parentheses, unary minus, integers, `**2`, one unit) into its `Polynomial`;
`parse_factored` reads a product of two linear factors into its
`FactoredForm`, `expand` prints a factored expression's canonical expansion
and `row_shape` names the shape of a factored side. Bad input is an
`AlgebraError` that says what is wrong and where.

The values and their printing are defined in polyflax/polynomials.py. This
module is the one callers import for either: it provides those names too
(`algebra.Polynomial`, `algebra.format_factored`, ...).
"""

from __future__ import annotations

import re
from typing import NamedTuple

# The values and their printing, provided here as algebra.NAME (defined in polynomials.py).
from polyflax.polynomials import (  # pylint: disable=unused-import
    FUNCTIONS, SHAPES, UNITS, VARIABLES, AlgebraError, FactoredForm, LinearFactor, Polynomial,
    format_expanded, format_expanded_coefficients, format_factored, format_linear, is_trig,
    linear_sort_key, linear_term_cancels, refactorizations, shape_of)

# Longer inputs are refused before any work is done on them.
MAX_EXPRESSION_LENGTH = 256
# Deeper nesting of parentheses is refused (keeps the recursion bounded).
MAX_NESTING = 32


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


# ---------------------------------------------------------------------------
# Conveniences on printed rows.


def expand(factored_text: str) -> str:
  """The canonical expanded string of a factored (or any) expression."""
  fast = None
  if len(factored_text) <= MAX_EXPRESSION_LENGTH:
    fast = _fast_parse_factored(factored_text)
  return fast.expanded() if fast is not None else format_expanded(parse_polynomial(factored_text))


def row_shape(factored_text: str) -> str:
  """The shape of a factored side: one of `SHAPES`.

  "binomials" is (a*u+b)*(c*u+d), "k_u_binomial" is k*u*(c*u+d), "monomial"
  is k*u**2 and "square" is (a*u+b)**2.
  """
  return shape_of(parse_factored(factored_text))
