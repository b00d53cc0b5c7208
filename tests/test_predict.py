"""Prediction's input checks: which strings the model is asked about, and how they are spelt.

The predict mode end to end (main.py on a trained run) is tested in
test_evaluate.py, on the tiny run it shares with the evaluate mode.
"""

import hypothesis
from hypothesis import strategies as st
import pytest

from polyflax import algebra, predict
from polyflax import vocab as vocab_lib

VOCAB = vocab_lib.Vocab.default()

# ---------------------------------------------------------------------------
# check_expression()

# Pieces of near-miss inputs: the grammar's tokens, broken ones, spaces, control
# characters, a lone surrogate, an Arabic-Indic digit and a long number.
PIECES = ["(", ")", "*", "**", "+", "-", "2", "15", "0", "k", "x", "sin(k)", "sin(", "cos",
          "tan(x)", " ", "\t", "\n", "=", "^", "**2", "**3", "/", "é", "\x00", "\x1b", "\u2028",
          "\ud800", "\u0663", "9" * 15]
nonzero_coefficients = st.integers(-9, 8).filter(bool)
constants = st.integers(-32, 31)
data_factored_sides = st.builds(
    lambda unit, a, b, c, d: algebra.format_factored(unit, (a, b), (c, d)),
    st.sampled_from(algebra.UNITS), nonzero_coefficients, constants, nonzero_coefficients,
    constants)
near_misses = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=25).map("".join),
    st.tuples(data_factored_sides, st.integers(0, 30), st.integers(0, 2),
              st.sampled_from(PIECES)).map(
                  lambda t: t[0][:t[1]] + t[3] + t[0][t[1] + t[2]:]))


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(text=st.one_of(
    st.text(max_size=150), near_misses,
    st.text(st.characters(categories=("Cc", "Cf", "Co", "Zl", "Zp")), max_size=120)))
def test_any_string_gives_an_expression_or_a_one_line_error(text):
  try:
    factored = predict.check_expression(text, VOCAB)
  except predict.InputError as error:
    message = str(error)
    assert message and message.isprintable(), repr(message)  # one line, no control characters
    assert len(message) <= predict.MAX_MESSAGE_CHARS
  else:
    # A product of two linear factors, as the data spells it, equal to the input.
    assert algebra.format_factored(*algebra.parse_factored(factored)) == factored
    assert algebra.parse_polynomial(factored) == algebra.parse_polynomial(text)
    assert len(factored) <= predict.MAX_INPUT_CHARS
    assert VOCAB.unk_id not in VOCAB.encode(factored)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(factored=data_factored_sides, data=st.data())
def test_data_spelling_is_accepted_unchanged_even_with_spaces(factored, data):
  tokens = algebra.tokenize(factored)[:-1]  # without the end marker
  spaces = data.draw(st.lists(st.sampled_from(["", " ", "\t", "  "]), min_size=len(tokens) + 1,
                              max_size=len(tokens) + 1))
  spaced = spaces[0] + "".join(token.text + space for token, space in zip(tokens, spaces[1:]))
  assert predict.check_expression(spaced, VOCAB) == factored


@pytest.mark.parametrize("text, expected", [
    ("(2*k+29)*(k-15)", "(k-15)*(2*k+29)"),
    ("k*k", "k**2"),
    ("(3-sin(x))*sin(x)", "(3-sin(x))*sin(x)"),
    ("sin(x)*(3-sin(x))", "(3-sin(x))*sin(x)"),
])
def test_other_spellings_are_rewritten_as_the_data_spells_them(text, expected):
  assert predict.check_expression(text, VOCAB) == expected


@pytest.mark.parametrize("text, reason", [
    ("(k-15)*(2*k+29", "missing ')'"),
    ("(k-15)*(2*x+29)", "mixed units 'k' and 'x'"),
    ("k**3", "exponent 3"),
    ("(k-15)**2**2", "chained exponents"),
    ("sin(k)*k", "mixed units 'sin(k)' and 'k'"),
    ("", "empty input"),
    (" \t ", "empty input"),
    ("k+1", "found a sum"),
    ("(k-1 5)*(2*k+29)", "expected ')' but found '5'"),
    ("(k+1)*(k+2)*(k+3)", "not a product of two linear factors"),
    ("0*k*(k+1)", "not a product of two linear factors"),
    ("(k-1)*(k+\x1b[2J1)", "unknown token '\\x1b'"),
    ("(k\u22121)*(k+1)", "unknown token '\u2212'"),
    ("(99999999*k-99999999)*(k+99999999)", "longer than any factored side"),
    ("(" * 1_000_000, "1,000,000 characters is too long"),
])
def test_near_misses_are_refused_with_the_reason(text, reason):
  with pytest.raises(predict.InputError) as refused:
    predict.check_expression(text, VOCAB)
  assert reason in str(refused.value)
  assert str(refused.value).isprintable()
