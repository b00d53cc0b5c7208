"""Prediction: which strings the model is asked about, how they are spelt, the predict mode,
and what it says of the model's confidence.

The predict mode end to end runs main.py on the session's tiny run
(conftest.py); so do the confidence column of --tsv, the flags of doubtful
answers, the notes about the whole model, and calibrating an exported folder
in place. test_shipped_model.py runs predict with the shipped model.
"""

import concurrent.futures
import json
import os
import pathlib
import shutil
import sys

import hypothesis
from hypothesis import strategies as st
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax import algebra, calibration, cli, config_files, decode, generate, inference
from polyflax import input_pipeline, predict
from polyflax import vocab as vocab_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = vocab_lib.Vocab.default()
LOWER_CASE = str.maketrans("ACHIJKNOSTXYZ", "achijknostxyz")

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
    assert algebra.parse_polynomial(factored) == algebra.parse_polynomial(text.translate(LOWER_CASE))
    assert generate.as_drawn(algebra.parse_factored(factored)) is not None
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
    # Upper case is read as lower case; the data's variables are all lower case.
    ("(K-15)*(2*K+29)", "(k-15)*(2*k+29)"),
    ("SIN(X)*(3-Sin(X))", "(3-sin(x))*sin(x)"),
    # A product in the data's range, spelt with factors out of it, is given to
    # the model as the data would write it.
    ("2*(x+20)*(x-1)", "(x+20)*(2*x-2)"),
    ("(9*x+1)*(x+1)", "(-9*x-1)*(-x-1)"),
    ("10*x*(x+1)", "2*x*(5*x+5)"),
    ("72*x**2", "72*x**2"),
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
    ("(99999999*k-99999999)*(k+99999999)", "the constant -99999999 in"),
    ("(" * 1_000_000, "1,000,000 characters is too long"),
    # Positions count from 1; the variables outside the data's are named.
    ("hello", "unknown variable 'e' at position 2 in 'hello' (the variables are a c h i j k n o s "
              "t x y z); expected a product of two linear factors such as (k-15)*(2*k+29)"),
    ("(q+1)*(q-2)", "unknown variable 'q' at position 2"),
    ("(k+1)*(k-", "unexpected end of expression at position 10 in '(k+1)*(k-'; expected a "
                  "product of two linear factors such as (k-15)*(2*k+29)"),
    ("(k+1)*(K+2)", "mixed units 'k' and 'K'"),
])
def test_near_misses_are_refused_with_the_reason(text, reason):
  with pytest.raises(predict.InputError) as refused:
    predict.check_expression(text, VOCAB)
  assert reason in str(refused.value)
  assert str(refused.value).isprintable()


# ---------------------------------------------------------------------------
# The data's range: factors a*u+b with a in -9..8 (not 0) and b in -32..31.

RANGE = "(its factors a*u+b have a in -9..8, not 0, and b in -32..31)"


@pytest.mark.parametrize("inside, outside, refusal", [
    # The examples.
    ("(x+31)*(x+1)", "(x+100)*(x+1)", "the constant 100 in (x+1)*(x+100)"),
    ("(x+31)*(x-1)", "(x+40)*(x-1)", "the constant 40 in (x-1)*(x+40)"),
    ("(8*x+1)*(x+2)", "(10*x+1)*(x+2)", "the coefficient 10 of x in (x+2)*(10*x+1)"),
    # Each bound, where changing signs cannot bring the product inside: with
    # (x-32) beside it, (x+32) cannot become (-x-32).
    ("(-9*x+1)*(x+1)", "(-10*x+1)*(x+1)", "the coefficient -10 of x"),
    ("(8*x+1)*(-9*x+1)", "(9*x+1)*(-9*x+1)", "the coefficient 9 of x"),
    ("(x-32)*(x+1)", "(x-33)*(x+1)", "the constant -33"),
    ("(x+31)*(x-32)", "(x+32)*(x-32)", "the constant 32"),
    ("-9*x*(x-32)", "-10*x*(x-32)", "the outer factor -10 in -10*x*(x-32)"),
    ("8*x*(x-32)", "9*x*(x-32)", "the outer factor 9 in 9*x*(x-32)"),
    ("-9*sin(t)*(sin(t)+31)", "-9*sin(t)*(sin(t)+32)", "the constant 32 in"),
])
def test_the_data_range_is_accepted_and_refused_at_each_bound(inside, outside, refusal):
  assert predict.check_expression(inside, VOCAB) == algebra.format_factored(
      *algebra.parse_factored(inside))
  with pytest.raises(predict.InputError) as refused:
    predict.check_expression(outside, VOCAB)
  assert str(refused.value).startswith(refusal)
  assert str(refused.value).endswith(f"is outside the data's range {RANGE}")


@pytest.mark.parametrize("inside, outside", [
    ("81*x**2", "-81*x**2"),  # (-9*x)*(-9*x), while 9 is out of range
    ("-72*x**2", "11*x**2"),  # (-9*x)*(8*x); 11 is prime
    ("64*sin(a)**2", "100*sin(a)**2"),
])
def test_a_monomial_is_in_range_when_its_coefficient_is_a_product_of_two(inside, outside):
  assert predict.check_expression(inside, VOCAB) == inside
  with pytest.raises(predict.InputError) as refused:
    predict.check_expression(outside, VOCAB)
  assert str(refused.value).startswith(f"the coefficient {outside.split('*')[0]} of {outside} "
                                       "is outside the data's range: not a product of two "
                                       "numbers in -9..8")


def test_every_real_factored_side_is_accepted_as_it_is(real_dev_lines):
  # The data's range holds every real line, each spelt as the model saw it.
  refused, changed = [], []
  for line in real_dev_lines:
    factored = line.split("=", 1)[0]
    try:
      if predict.check_expression(factored, VOCAB) != factored:
        changed.append(factored)
    except predict.InputError as error:
      refused.append(f"{factored}: {error}")
  assert len(real_dev_lines) == 50_001
  assert refused == [] and changed == []


# ---------------------------------------------------------------------------
# What the model is sure of: --tsv's confidence, the flags and notes on
# standard error (on the shared tiny run, barely trained).

INPUTS = ["(k-15)*(2*k+29)", "", "(x+100)*(x+1)", "(21-t)*(-6*t-4)", "-7*sin(i)**2",
          "(2*y+18)*(3*y-26)", "(8*x+31)*(-9*x-32)"]


def run_predict(workdir, data_dir, *flags, stdin=None):
  command = [sys.executable, "main.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
             f"--config.data_dir={data_dir}", "--config.generated_size=2000", "--mode=predict",
             *flags]
  return forked_python.run(command, cwd=REPO, capture_output=True, text=True, input=stdin,
                        timeout=600)


def test_flags_tsv_confidence_and_in_place_calibration_of_an_exported_tiny_run(tiny_run,
                                                                            tmp_path):
  run = tmp_path / "run"
  shutil.copytree(tiny_run.workdir, run)
  stdin = "\n".join(INPUTS) + "\n"

  # A training run: no threshold, so nothing is flagged, and it says so once.
  result = run_predict(run, tiny_run.data_dir, "--tsv", stdin=stdin)
  assert result.returncode == 1, result.stderr[-3000:]  # (x+100)*(x+1) is refused
  rows = [line.split("\t") for line in result.stdout.splitlines()]
  assert [row[0] for row in rows] == INPUTS and all(len(row) == 3 for row in rows)
  answered = [row for row in rows if row[0] and not row[1].startswith("error: ")]
  assert len(answered) == 5
  confidences = {row[0]: float(row[2]) for row in answered}
  assert all(0.0 < confidence <= 1.0 for confidence in confidences.values())
  assert rows[1] == ["", "", ""] and rows[2][1].startswith("error: ") and rows[2][2] == ""
  stderr = result.stderr.splitlines()
  notes = [line for line in stderr if not line.startswith("error: ")]
  assert len(notes) == 2, stderr
  # One line: the model is barely trained (its validation record says so).
  assert notes[0].startswith(f"warning: the model in {run} (step 23) expanded only ")
  assert notes[0].endswith("of its validation lines exactly: expect wrong answers")
  assert notes[1].startswith(f"note: the model in {run} carries no confidence threshold")
  assert [line for line in stderr if line.startswith("error: ")] == [
      line for line in stderr if line.startswith("error: line 3: ")]

  # Exported: the card carries a threshold calibrated on the validation split.
  exported = tmp_path / "exported"
  config = config_files.set_fields(config_files.tiny(tiny_run.data_dir),
                                   {"export.dir": str(exported)})
  assert cli.run("export", config, str(run)) == 0
  card_path = exported / "model.json"
  card = json.loads(card_path.read_text())
  calibrated = dict(card[calibration.CARD_KEY])
  assert calibrated["threshold"] == 1.0  # every validation answer was wrong
  validation_lines = (tiny_run.data_dir / "val_set.txt").read_text().splitlines()
  assert calibrated["lines"] == len(validation_lines)
  assert calibrated["data"] == str(tiny_run.data_dir / "val_set.txt")
  assert 0.0 <= calibrated["threshold"] <= 1.0
  params_before = {path: path.read_bytes() for path in (exported / "params").rglob("*")
                   if path.is_file()}

  # A threshold between the answers' confidences flags exactly those below it.
  ordered = sorted(set(confidences.values()))
  gaps = [(high - low, (low + high) / 2) for low, high in zip(ordered, ordered[1:])]
  threshold = max(gaps)[1]
  card[calibration.CARD_KEY]["threshold"] = threshold
  card_path.write_text(json.dumps(card, indent=2))
  result = run_predict(exported, tiny_run.data_dir, stdin=stdin)
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.stdout.splitlines() == [row[1] for row in rows]  # one answer per input line
  flags = [line for line in result.stderr.splitlines() if "low confidence" in line]
  expected = [(number, text) for number, text in enumerate(INPUTS, 1)
              if text in confidences and confidences[text] < threshold]
  assert 0 < len(expected) < 5
  assert len(flags) == len(expected), result.stderr
  for line, (number, text) in zip(flags, expected):
    assert line.startswith(f"warning: line {number}: low confidence {confidences[text]:.6f} "
                           f"(the model's threshold is {threshold:.6f}) in the answer to "
                           f"'{text}'"), line
  # Once, from the card's calibration: the model is barely trained; no note.
  assert sum(line.startswith("warning: the model in") for line in result.stderr.splitlines()) == 1
  assert not any(line.startswith("note: ") for line in result.stderr.splitlines())

  # --expr: the flag names the input as typed.
  doubtful = expected[0][1]
  result = run_predict(exported, tiny_run.data_dir, "--tsv", "--expr", f" {doubtful} ")
  assert result.returncode == 0, result.stderr[-3000:]
  ((text, answer, confidence),) = [line.split("\t") for line in result.stdout.splitlines()]
  assert (text, answer) == (f" {doubtful} ", rows[INPUTS.index(doubtful)][1])
  # (Another batch shape: the same confidence up to rounding.)
  assert float(confidence) == pytest.approx(confidences[doubtful], abs=2e-6)
  (flag,) = [line for line in result.stderr.splitlines() if "low confidence" in line]
  assert flag.startswith("warning: low confidence ")
  assert flag.endswith(f"in the answer to '{doubtful}': it may be wrong")

  # Calibrating the folder again, in place, rewrites only the card's calibration.
  result = forked_python.run([sys.executable, "-m", "polyflax.export", "calibrate", "--config",
                           "configs/tiny.py", "--workdir", str(exported)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  recalibrated = json.loads(card_path.read_text())
  assert recalibrated[calibration.CARD_KEY]["threshold"] == calibrated["threshold"]
  assert {name: value for name, value in recalibrated[calibration.CARD_KEY].items()
          if name != "calibrated_at"} == {name: value for name, value in calibrated.items()
                                          if name != "calibrated_at"}
  assert {name: value for name, value in recalibrated.items() if name != calibration.CARD_KEY} == {
      name: value for name, value in card.items() if name != calibration.CARD_KEY}
  assert {path: path.read_bytes() for path in (exported / "params").rglob("*")
          if path.is_file()} == params_before
  assert sorted(os.listdir(exported)) == ["config.json", "model.json", "params", "vocab.json"]
  assert f"confidence threshold {calibrated['threshold']:.6g}" in result.stdout

  # Calibrating a folder that is not an exported model is one error line.
  result = forked_python.run([sys.executable, "-m", "polyflax.export", "calibrate", "--config",
                           "configs/tiny.py", "--workdir", str(run)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {run} holds no model.json: not an exported model folder")
# The predict mode end to end, on the session's tiny run.


def run_main(tiny_run, *flags, stdin=None):
  """Runs main.py on the tiny run; stdin and outputs are bytes."""
  command = [sys.executable, "main.py", "--config", "configs/tiny.py",
             "--workdir", str(tiny_run.workdir),
             f"--config.data_dir={tiny_run.data_dir}", "--config.generated_size=2000", *flags]
  return forked_python.run(command, cwd=REPO, capture_output=True, input=stdin, timeout=600)


# Lines of standard input: good, empty, undecodable, refused, too long, spaced out.
STANDARD_INPUT = (b"(k-15)*(2*k+29)\n\n\xff\xfe\nk**3\n" + b"(" * 100_000 + b"\n"
                  + b" sin(k) * ( 3 - sin(k) )\r\n")
# The predict mode's runs of main.py: (flags, standard input) by name.
PREDICT_RUNS = {
    "good expression": (["--mode=predict", "--expr", "(2*k+29)*(k-15)"], None),
    "malformed expression": (["--mode=predict", "--expr", "(k-15)*(2*k+29\x1b[0m\n"], None),
    "standard input": (["--mode=predict"], STANDARD_INPUT),
}


@pytest.fixture(scope="module")
def predict_mode(tiny_run):
  """{name: future result of main.py} of PREDICT_RUNS, all started at once, side by side."""
  with concurrent.futures.ThreadPoolExecutor(len(PREDICT_RUNS)) as pool:
    yield {name: pool.submit(run_main, tiny_run, *flags, stdin=stdin)
           for name, (flags, stdin) in PREDICT_RUNS.items()}


@pytest.fixture(scope="module")
def expand_in_process(tiny_run):
  """Expands one data-spelt expression with the tiny run's best checkpoint, in this process."""
  config = tiny_run.config
  model = inference.restore_for_inference(config, str(tiny_run.workdir))
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=model.model_cfg.max_len,
                           batching=input_pipeline.batching(config, model.mesh,
                                                            buckets=(model.model_cfg.max_len,)))
  return lambda factored: decoder.decode_texts([factored], batch_size=1)[0]


def test_predict_mode_expands_a_good_expression(predict_mode, expand_in_process):
  result = predict_mode["good expression"].result()
  stderr = result.stderr.decode()
  assert result.returncode == 0, stderr[-3000:]
  assert "error" not in stderr and "Traceback" not in stderr
  # The model's answer for the data's spelling of the product.
  assert result.stdout.decode().splitlines() == [expand_in_process("(k-15)*(2*k+29)")]


def test_predict_mode_refuses_a_malformed_expression_in_one_line(predict_mode):
  result = predict_mode["malformed expression"].result()
  assert result.returncode == 1
  assert result.stdout == b""
  (line,) = result.stderr.decode().splitlines()
  assert line.startswith("error: unknown token '\\x1b'"), line


def test_predict_mode_answers_each_line_of_standard_input_in_its_place(predict_mode,
                                                                     expand_in_process):
  result = predict_mode["standard input"].result()
  stderr = result.stderr.decode()
  assert result.returncode == 1
  assert "Traceback" not in stderr
  answers = result.stdout.decode().split("\n")
  assert answers[-1] == "" and len(answers) == 7, answers  # one line per input line
  assert answers[1] == ""  # an empty line for an empty one
  assert [answer.startswith("error: ") for answer in answers[:6]] == [
      False, False, True, True, True, False]
  assert answers[0] and answers[5]
  assert "exponent 3" in answers[3] and "too long" in answers[4]
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert [error.split(":")[:2] for error in errors] == [
      ["error", " line 3"], ["error", " line 4"], ["error", " line 5"]], stderr
  # Besides: the run is barely trained and has no threshold (tested below).
  assert [line.split(" ")[0] for line in stderr.splitlines() if line not in errors] == [
      "warning:", "note:"], stderr
  assert errors[1] == "error: line 4: " + answers[3][len("error: "):]
  # The answers are the decoder's own, in the data's spelling.
  assert [answers[0], answers[5]] == [expand_in_process("(k-15)*(2*k+29)"),
                                      expand_in_process("(3-sin(k))*sin(k)")]
