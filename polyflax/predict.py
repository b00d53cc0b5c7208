"""The predict mode: expanding expressions given on the command line or standard input.

`check_expression` decides which inputs the model is asked about and spells
them as the data does; `predict_main` reads the inputs, prints one expansion
(standard output) or one `error: ...` line (standard error) for each, and
restores the model only once an input has passed the checks.
"""

from __future__ import annotations

import sys

from absl import logging
import ml_collections

from polyflax import algebra
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import decode
from polyflax import inference
from polyflax import input_pipeline
from polyflax import vocab as vocab_lib
from polyflax import workdir as workdir_lib

# The factored sides of the original data have at most this many characters.
MAX_INPUT_CHARS = data_lib.MAX_SIDE_LENGTH
# Input longer than this (spaces included) is refused before any other work.
MAX_RAW_INPUT_CHARS = 4 * MAX_INPUT_CHARS
# Longest message of an InputError.
MAX_MESSAGE_CHARS = 200


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


def check_expression(text: str, vocab: vocab_lib.Vocab | None = None, *,
                     max_len: int = 32) -> str:
  """The factored expression `text`, spelt as the data spells it.

  Accepts any spelling (spaces between tokens, factors in either order,
  `k*k`) of a product of two linear factors in one unit, as the grammar of
  `algebra.parse_factored` reads it, and returns it printed as the data set
  prints factored sides (`algebra.format_factored`), which is what the model
  was trained on.

  Args:
    text: any string.
    vocab: the model's vocabulary (default: the standard one).
    max_len: the model's longest sequence, eos included.

  Raises:
    InputError: saying what is wrong, in one printable line: empty or too
      long input, a character or token outside the grammar, a syntax error,
      mixed units, an exponent other than 2, or not a product of two linear
      factors.
  """
  if len(text) > MAX_RAW_INPUT_CHARS:
    raise InputError(f"input of {len(text):,} characters is too long (a factored side "
                     f"has at most {MAX_INPUT_CHARS})")
  if not text.strip():
    raise InputError("empty input: expected a product such as (k-15)*(2*k+29)")
  try:
    form = algebra.parse_factored(text)  # spaces may separate tokens, not split them
    canonical = algebra.format_factored(*form)
  except algebra.AlgebraError as error:
    raise InputError(str(error)) from None
  except ValueError:  # format_factored: a factor without the unit, e.g. 0*k*(k+1)
    raise InputError(f"not a product of two linear factors in '{text.strip()}'") from None
  if len(canonical) > MAX_INPUT_CHARS:
    raise InputError(f"'{text.strip()}' is written '{canonical}' in the data's spelling, "
                     f"{len(canonical)} characters: longer than any factored side of the data "
                     f"({MAX_INPUT_CHARS})")
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


def predict_main(config: ml_collections.ConfigDict, workdir: str, expr: str | None) -> int:
  """Prints the expansion of `expr`, or of each line of standard input.

  Each expansion goes to standard output as one line; an input that is not a
  product of two linear factors gets one line `error: ...` on standard error
  instead (blank lines of standard input are skipped). Inputs are checked
  before the model is restored, so a refused `expr` costs no model loading.
  Returns 0, or 1 if any input was refused.
  """
  _lenient_stdio()
  config_checks.check_config(config)
  max_len = workdir_lib.run_config(config, workdir).max_len
  vocab = vocab_lib.Vocab.default()
  decoder = None
  lines = [expr] if expr is not None else (line.rstrip("\r\n") for line in sys.stdin)
  status = 0
  for line in lines:
    if expr is None and not line.strip():
      continue
    try:
      factored = check_expression(line, vocab, max_len=max_len)
    except InputError as error:
      print(f"error: {error}", file=sys.stderr, flush=True)
      status = 1
      continue
    if decoder is None:
      model = _restore_quietly(config, workdir)
      # One bucket: a single compiled shape serves every expression.
      decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                               max_len=model.model_cfg.max_len,
                               beam_size=config.eval.beam_size,
                               length_penalty=config.eval.length_penalty,
                               batching=input_pipeline.batching(
                                   config, model.mesh, buckets=(model.model_cfg.max_len,)))
    (prediction,) = decoder.decode_texts([factored], batch_size=1)
    print(prediction, flush=True)
  return status
