"""The predict mode: expanding expressions given on the command line or standard input.

`check_expression` decides which inputs the model is asked about (products
of two linear factors in the data's range) and spells them as the data does;
`predict_main` reads the inputs, prints one line for each (the expansion, or
`error: ...` in its place), and restores the model only once an input has
passed the checks.

What the model is sure of goes to standard error, standard output keeping
one line per input: one `warning: ...` line for each answer whose confidence
is below the model's threshold (`calibration.py`; the confidence itself is
`--tsv`'s third column), and once, when the model is restored, a warning
when it expanded less than `MIN_TRUSTED_EXACT_MATCH` of its validation
lines exactly (an untrained or barely trained model), and a note when it
carries no threshold (a training run's workdir, or a folder exported before
models carried one): its answers are then never flagged.
"""

from __future__ import annotations

import itertools
import math
import re
import sys

from absl import logging
import ml_collections
import numpy as np

from polyflax import algebra
from polyflax import calibration
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import decode
from polyflax import generate
from polyflax import inference
from polyflax import input_pipeline
from polyflax import vocab as vocab_lib
from polyflax import workdir as workdir_lib

# The factored sides of the original data have at most this many characters.
MAX_INPUT_CHARS = data_lib.MAX_SIDE_LENGTH
# Input longer than this (spaces included) is refused before any other work.
MAX_RAW_INPUT_CHARS = 4 * MAX_INPUT_CHARS
# Lines of standard input decoded together (one compiled batch shape; the
# last, shorter batch compiles one more).
LINES_PER_BATCH = 256
# Longest message of an InputError.
MAX_MESSAGE_CHARS = 200
# Longest input quoted in a message.
MAX_SHOWN_CHARS = 40
# A refusal of what the parser cannot read ends with what was expected (or
# with an example, when the reason already says it).
EXPECTED = "expected a product of two linear factors such as (k-15)*(2*k+29)"
EXAMPLE = "e.g. (k-15)*(2*k+29)"
# Upper case is read as lower case for the data's variables (and sin, cos,
# tan, whose letters are among them); other letters stay as typed.
_UPPER_CASE_VARIABLES = frozenset("".join(algebra.VARIABLES).upper())
_LOWER_CASE = str.maketrans({letter: letter.lower() for letter in _UPPER_CASE_VARIABLES})
_FUNCTION_NAMES = re.compile("|".join(algebra.FUNCTIONS), re.IGNORECASE)
# A model that expanded less than this share of its validation lines exactly
# is said to give wrong answers, once, when it is restored.
MIN_TRUSTED_EXACT_MATCH = 0.99


def _printable(text: str) -> str:
  """`text` with line breaks, control and other unprintable characters escaped."""
  return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                 for char in text)


class InputError(ValueError):
  """An input the model is not asked about.

  The message is one line of printable characters (others are escaped, as
  in `\\x1b`), at most `MAX_MESSAGE_CHARS` long.
  """

  def __init__(self, message: str):
    message = _printable(message)
    if len(message) > MAX_MESSAGE_CHARS:
      message = message[:MAX_MESSAGE_CHARS - 3] + "..."
    super().__init__(message)


def _fold_case(text: str) -> str:
  """`text` with the upper-case forms of the data's variables in lower case.

  Raises:
    InputError: if one letter appears in both cases (`(k+1)*(K+2)`): two
      variables to a reader, one to the model.
  """
  folded = text.translate(_LOWER_CASE)
  if folded != text:
    letters = set(_FUNCTION_NAMES.sub("", text))
    for upper in sorted(letters & _UPPER_CASE_VARIABLES):
      if upper.lower() in letters:
        raise InputError(f"mixed units '{upper.lower()}' and '{upper}' in '{_shown(text)}' "
                         f"(upper case is read as lower case); {EXPECTED}")
  return folded


def _shown(text: str) -> str:
  return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 3] + "..."


def _parse_error(error: algebra.AlgebraError, text: str) -> InputError:
  """The parser's `error` about `text`, with what was expected."""
  reason, position = error.reason, error.position
  note = ""
  if (reason.startswith("unknown token") and position is not None and position <= len(text)
      and text[position - 1].isascii() and text[position - 1].isalpha()):
    reason = f"unknown variable {text[position - 1]!r}"
    note = f" (the variables are {' '.join(algebra.VARIABLES)})"
  where = f" at position {position}" if position is not None else ""
  expected = EXAMPLE if "product of two linear factors" in reason else EXPECTED
  return InputError(f"{reason}{where} in '{_shown(text)}'{note}; {expected}")


def _domain_error(form: algebra.FactoredForm, canonical: str) -> InputError:
  """Names the first number of `form` outside the data's range (`generate.as_drawn`)."""
  config = generate.DEFAULT_CONFIG
  (a_low, a_high), (b_low, b_high) = config.coefficient_range, config.constant_range
  shown = _shown(canonical)
  if algebra.shape_of(form) == "monomial":
    return InputError(f"the coefficient {form.first[0]} of {shown} is outside the data's range: "
                      f"not a product of two numbers in {a_low}..{a_high}")
  outer = algebra.shape_of(form) == "k_u_binomial"
  for index, (a, b) in enumerate((form.first, form.second)):
    if not generate.can_draw((1, b), config):
      what = f"the constant {b}"
      break
    if not generate.can_draw((a, 0), config):
      what = (f"the outer factor {a}" if outer and index == 0
              else f"the coefficient {a} of {form.unit}")
      break
  else:  # not reached: a form whose numbers are all in range can be drawn
    what = "a number"
  return InputError(f"{what} in {shown} is outside the data's range (its factors a*u+b have "
                    f"a in {a_low}..{a_high}, not 0, and b in {b_low}..{b_high})")


def check_expression(text: str, vocab: vocab_lib.Vocab | None = None, *,
                     max_len: int = 32) -> str:
  """The factored expression `text`, spelt as the data spells it.

  Accepts any spelling (spaces between tokens, factors in either order,
  `k*k`, `K` for `k`) of a product of two linear factors in one unit, as the
  grammar of `algebra.parse_factored` reads it, if the product lies in the
  data's range (`generate.as_drawn`: it can be written (a*u+b)*(c*u+d) with
  a, c in -9..8, not 0, and b, d in -32..31), and returns it printed as the
  data set prints factored sides (`algebra.format_factored`), which is what
  the model was trained on. A product the data would write with other
  factors is given to the model in that spelling (`2*(x+20)*(x-1)` as
  `(x+20)*(2*x-2)`).

  Args:
    text: any string.
    vocab: the model's vocabulary (default: the standard one).
    max_len: the model's longest sequence, eos included.

  Raises:
    InputError: saying what is wrong, in one printable line: empty or too
      long input; for what the parser refuses (a character or token outside
      the grammar, a syntax error, mixed units, an exponent other than 2, not
      a product of two linear factors), the reason and its position (the
      first character is 1) and the expected form; a product outside the
      data's range, naming the number and the range.
  """
  if len(text) > MAX_RAW_INPUT_CHARS:
    raise InputError(f"input of {len(text):,} characters is too long (a factored side "
                     f"has at most {MAX_INPUT_CHARS})")
  if not text.strip():
    raise InputError(f"empty input; {EXPECTED}")
  folded = _fold_case(text)
  try:
    form = algebra.parse_factored(folded)  # spaces may separate tokens, not split them
    canonical = algebra.format_factored(*form)
  except algebra.AlgebraError as error:
    raise _parse_error(error, text) from None
  except ValueError:  # format_factored: a factor without the unit, e.g. 0*k*(k+1)
    raise InputError(f"not a product of two linear factors in '{_shown(text.strip())}'; "
                     f"{EXAMPLE}") from None
  drawn = generate.as_drawn(form)
  if drawn is None:
    raise _domain_error(form, canonical)
  canonical = algebra.format_factored(*drawn)
  vocab = vocab or vocab_lib.Vocab.default()
  ids = vocab.encode(canonical)
  if len(ids) > max_len or vocab.unk_id in ids:
    raise InputError(f"'{canonical}' does not fit the model ({len(ids)} tokens with eos, "
                     f"at most {max_len}, or a token outside its vocabulary)")
  return canonical


def _lenient_stdio() -> None:
  """Undecodable input bytes become U+FFFD; unprintable output is escaped, never an error."""
  for stream, errors in ((sys.stdin, "replace"), (sys.stdout, "backslashreplace"),
                         (sys.stderr, "backslashreplace")):
    if hasattr(stream, "reconfigure"):
      stream.reconfigure(errors=errors)


def _restore_quietly(config: ml_collections.ConfigDict,
                     workdir: str) -> inference.InferenceModel:
  """`inference.restore_for_inference` without Orbax's warnings about read-only folders.

  Prediction prints one line per input; warnings above errors stay hidden.
  """
  verbosity = logging.get_verbosity()
  logging.set_verbosity(min(verbosity, logging.ERROR))  # absl: lower shows less
  try:
    return inference.restore_for_inference(config, workdir)
  finally:
    logging.set_verbosity(verbosity)


def validation_exact_match(model: inference.InferenceModel) -> float | None:
  """The share of its validation lines the model expanded exactly (None: not recorded).

  From the card's calibration (the whole validation split) when the model
  has one, else from the validation of its step (a sample of the split).
  """
  if model.calibration is not None and model.calibration.get("lines"):
    return 1.0 - model.calibration["wrong"] / model.calibration["lines"]
  exact_match = (model.record.validation or {}).get("exact_match")
  return None if exact_match is None else float(exact_match)


def trust_notes(model: inference.InferenceModel, workdir: str) -> list[str]:
  """Lines for standard error about the whole model: barely trained, or without a threshold."""
  notes = []
  exact_match = validation_exact_match(model)
  if exact_match is not None and exact_match < MIN_TRUSTED_EXACT_MATCH:
    notes.append(f"warning: the model in {workdir} (step {model.step}) expanded only "
                 f"{exact_match:.1%} of its validation lines exactly: expect wrong answers")
  if model.confidence_threshold is None:
    notes.append(f"note: the model in {workdir} carries no confidence threshold (a training "
                 "run, or exported before models carried one), so no answer is flagged as "
                 "doubtful; export it, or calibrate an exported folder with `python -m "
                 "polyflax.export calibrate`")
  return notes


def _confidence_text(confidence: float) -> str:
  """A confidence as --tsv and the warnings print it ('' when the decoder gave none)."""
  return "" if math.isnan(confidence) else f"{confidence:.6f}"


class _Expander:
  """Expands checked expressions in batches; restores the model at its first use.

  On restoring, prints `trust_notes` on standard error.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.decoder: decode.Decoder | None = None
    self.threshold: float | None = None

  def __call__(self, factored: list[str]) -> decode.Decoded:
    if not factored:
      return decode.Decoded([], np.zeros((0,), np.float32))
    if self.decoder is None:
      model = _restore_quietly(self.config, self.workdir)
      self.threshold = model.confidence_threshold
      for note in trust_notes(model, self.workdir):
        print(note, file=sys.stderr, flush=True)
      # One bucket: every batch of a size compiles once, whatever its lengths.
      self.decoder = decode.Decoder(
          model.graphdef, model.params, model.vocab, model.mesh,
          max_len=model.model_cfg.max_len, beam_size=self.config.eval.beam_size,
          length_penalty=self.config.eval.length_penalty,
          batching=input_pipeline.batching(self.config, model.mesh,
                                           buckets=(model.model_cfg.max_len,)))
    return self.decoder.decode_texts_with_confidence(factored, batch_size=LINES_PER_BATCH)

  def doubt(self, text: str, confidence: float, number: int | None = None) -> None:
    """Says on standard error that the answer to `text` is doubtful, if it is below the threshold."""
    if calibration.is_flagged(confidence, self.threshold):
      where = "" if number is None else f"line {number}: "
      print(f"warning: {where}low confidence {_confidence_text(confidence)} (the model's "
            f"threshold is {self.threshold:.6f}) in the answer to "
            f"'{_shown(_printable(text.strip()))}': it may be wrong", file=sys.stderr)


def _tsv_row(text: str, answer: str, confidence: float = math.nan) -> str:
  """`text<TAB>answer<TAB>confidence`, with tabs and other control characters of `text` escaped."""
  return f"{_printable(text)}\t{answer}\t{_confidence_text(confidence)}"


def predict_main(config: ml_collections.ConfigDict, workdir: str, expr: str | None, *,
                 tsv: bool = False) -> int:
  """Prints the expansion of `expr`, or of each line of standard input.

  `expr`: its expansion on standard output, or one line `error: ...` on
  standard error. Standard input: one line of standard output per line of
  input, in order: the expansion, or `error: ...` in its place (and
  `error: line N: ...` on standard error), or an empty line for an empty
  one. `tsv` writes `input<TAB>output<TAB>confidence` instead (no header;
  for `expr` too, the error included; the confidence is empty for an error
  or an empty line). An answer below the model's confidence threshold gets
  one `warning: [line N: ]...` line on standard error, naming the input
  (see the module docstring). Inputs are checked before the model is
  restored, so refused inputs cost no model loading; lines of a file or
  pipe are decoded `LINES_PER_BATCH` at a time, lines typed at a terminal
  one by one.

  Returns:
    0 if every input was expanded (flagged answers too), 1 if any was
    refused (the others are still answered).
  """
  _lenient_stdio()
  config_checks.check_config(config)
  max_len = workdir_lib.run_config(config, workdir).max_len
  vocab = vocab_lib.Vocab.default()
  expand = _Expander(config, workdir)
  if expr is not None:
    try:
      factored = check_expression(expr, vocab, max_len=max_len)
    except InputError as error:
      if tsv:
        print(_tsv_row(expr, f"error: {error}"), flush=True)
      print(f"error: {error}", file=sys.stderr, flush=True)
      return 1
    (answer,), (confidence,) = expand([factored])
    expand.doubt(expr, confidence)
    print(_tsv_row(expr, answer, confidence) if tsv else answer, flush=True)
    return 0
  lines = (line.rstrip("\r\n") for line in sys.stdin)
  batch_lines = 1 if sys.stdin.isatty() else LINES_PER_BATCH
  status, number = 0, 0
  while block := list(itertools.islice(lines, batch_lines)):
    answers: list[str | None] = []
    factored = []
    for line in block:
      number += 1
      if not line.strip():
        answers.append("")
        continue
      try:
        factored.append(check_expression(line, vocab, max_len=max_len))
        answers.append(None)  # filled in below, in order
      except InputError as error:
        answers.append(f"error: {error}")
        print(f"error: line {number}: {error}", file=sys.stderr, flush=True)
        status = 1
    expansions = iter(zip(*expand(factored)))
    first_number = number - len(block) + 1
    for line_number, line, answer in zip(itertools.count(first_number), block, answers):
      confidence = math.nan
      if answer is None:
        answer, confidence = next(expansions)
        expand.doubt(line, confidence, line_number)
      print(_tsv_row(line, answer, confidence) if tsv else answer)
    sys.stdout.flush()
    sys.stderr.flush()
  return status
