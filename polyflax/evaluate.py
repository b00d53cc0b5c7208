"""Decoding a test set and scoring it; prediction of single expressions.

`evaluate_workdir` restores the parameters of a run's best checkpoint (or of
an exported model folder), decodes a file of
`factored=expanded` lines with the cached decoder (greedy or beam), prints a
few examples and the score as the reference did, and writes the predictions,
`metrics.json` and a TensorBoard event file. `score` computes the figures.
`predict_main` expands expressions given on the command line or standard
input; `check_expression` decides which inputs the model is asked about.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import sys
import time
from typing import Sequence

from absl import logging
import jax
import ml_collections
import tqdm

from polyflax import algebra
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import decode
from polyflax import inference
from polyflax import input_pipeline
from polyflax import run_record
from polyflax import vocab as vocab_lib
from polyflax import workdir as workdir_lib

# The factored sides of the original data have at most this many characters.
MAX_INPUT_CHARS = data_lib.MAX_SIDE_LENGTH
# Input longer than this (spaces included) is refused before any other work.
MAX_RAW_INPUT_CHARS = 4 * MAX_INPUT_CHARS
# Longest message of an InputError.
MAX_MESSAGE_CHARS = 200
# Names of the coefficients (c2, c1, c0) of c2*u**2 + c1*u + c0.
COEFFICIENT_NAMES = ("quadratic", "linear", "constant")
# Kinds of failure counted by `score`: a row counts under every coefficient it
# gets wrong; the other kinds exclude the coefficient ones.
FAILURE_KINDS = ("unparseable", "printed_differently", "wrong_unit") + tuple(
    f"wrong_{name}" for name in COEFFICIENT_NAMES)


# ---------------------------------------------------------------------------
# Scoring.


def _parse_or_none(text: str) -> algebra.Polynomial | None:
  try:
    return algebra.parse_polynomial(text)
  except algebra.AlgebraError:
    return None


def row_groups(factored: str, expanded: str, seen_lines: set[str] | None = None) -> list[str]:
  """The groups a test row is scored in: its shape, trig, seen or unseen, and both.

  Shapes are those of `algebra.SHAPES` ("binomials", "k_u_binomial",
  "monomial", "square"), or "unknown" for a side that is not a product of two
  linear factors. "seen"/"unseen" (only with `seen_lines`) says whether the
  whole line was among those the model trained on; the row is then also in
  "shape_<shape>_seen" or "shape_<shape>_unseen".
  """
  try:
    shape = "shape_" + algebra.row_shape(factored)
  except algebra.AlgebraError:
    shape = "shape_unknown"
  groups = [shape]
  if algebra.is_trig(factored):
    groups.append("shape_trig")
  if seen_lines is not None:
    seen = "seen" if f"{factored}={expanded}" in seen_lines else "unseen"
    groups += [seen, f"{shape}_{seen}"]
  return groups


def failure_kinds(expanded: str, predicted: str) -> list[str]:
  """Why `predicted` is not `expanded` (empty when they are equal).

  One of "unparseable" (not a polynomial of the grammar),
  "printed_differently" (the right polynomial, printed another way),
  "wrong_unit" (another variable or function), or the wrong coefficients:
  "wrong_quadratic", "wrong_linear", "wrong_constant".
  """
  if predicted == expanded:
    return []
  predicted_poly = _parse_or_none(predicted)
  if predicted_poly is None:
    return ["unparseable"]
  target_poly = _parse_or_none(expanded)
  if predicted_poly == target_poly:
    return ["printed_differently"]
  if target_poly is None or (predicted_poly.unit and target_poly.unit
                             and predicted_poly.unit != target_poly.unit):
    return ["wrong_unit"]
  return [f"wrong_{name}" for name, got, want in zip(
      COEFFICIENT_NAMES, predicted_poly.coefficients, target_poly.coefficients) if got != want]


def score(pairs: Sequence[tuple[str, str]], predictions: Sequence[str],
          seen_lines: set[str] | None = None) -> dict:
  """Exact match and the finer figures of a decoded test set.

  Args:
    pairs: (factored, expanded) rows.
    predictions: the model's expanded side for each row.
    seen_lines: `factored=expanded` lines of the training split, to split the
      score into rows seen in training and rows not seen (None: no split).

  Returns:
    A flat dict: `exact_match`, `num_correct`, `num_examples`; `equivalence`
    (the fraction whose prediction parses to the target polynomial, printed
    either way) and `num_equivalent`; `exact_match_<group>` and
    `num_examples_<group>` for each group of `row_groups` that has rows;
    `num_failures` and `failures_<kind>` for each kind of `FAILURE_KINDS`.
  """
  if len(pairs) != len(predictions):
    raise ValueError(f"{len(pairs)} rows but {len(predictions)} predictions")
  num_correct = num_equivalent = 0
  groups = collections.defaultdict(lambda: [0, 0])  # group -> [correct, total]
  failures = collections.Counter({kind: 0 for kind in FAILURE_KINDS})
  for (factored, expanded), predicted in zip(pairs, predictions):
    correct = predicted == expanded
    kinds = failure_kinds(expanded, predicted)
    num_correct += correct
    num_equivalent += correct or kinds == ["printed_differently"]
    failures.update(kinds)
    for group in row_groups(factored, expanded, seen_lines):
      groups[group][0] += correct
      groups[group][1] += 1
  num_examples = len(pairs)
  total = max(num_examples, 1)
  metrics = {
      "exact_match": num_correct / total,
      "num_correct": num_correct,
      "num_examples": num_examples,
      "equivalence": num_equivalent / total,
      "num_equivalent": num_equivalent,
      "num_failures": num_examples - num_correct,
  }
  for kind in FAILURE_KINDS:
    metrics[f"failures_{kind}"] = failures[kind]
  for group, (correct, count) in sorted(groups.items()):
    metrics[f"exact_match_{group}"] = correct / count
    metrics[f"num_examples_{group}"] = count
  return metrics


# ---------------------------------------------------------------------------
# Evaluation of a run.


def resolve_test_file(config: ml_collections.ConfigDict) -> str:
  """`config.eval.test_file`, or by default ('') the test split of the run's data folder.

  `config` is the run's config (`workdir_lib.run_config`), so its data
  fields are those the run was trained on. Evaluation never makes data: a
  missing split is a FileNotFoundError that says how to make it.
  """
  if config.eval.test_file:
    return config.eval.test_file
  test_path = data_lib.split_paths(config.data_dir)["test"]
  if not test_path.exists():
    raise FileNotFoundError(
        f"no test split {test_path}: make the run's splits with `"
        + data_lib.split_command(config.data_dir, config.data_seed, config.generated_size)
        + "`, or name a file with --config.eval.test_file=FILE")
  return str(test_path)


def _training_lines(config: ml_collections.ConfigDict, record: run_record.RunRecord,
                    pairs: Sequence[tuple[str, str]]) -> tuple[str, set[str] | None]:
  """What the model trained on, and which test lines it holds (None: unknown).

  Returns (description, seen): for a run on the train split, its path and
  its lines; for a run on generated lines (`train_data="generated"`), the
  epochs begun, as the checkpoint's iterator state records them, and the
  test lines found among those epochs' lines (made again from `data_seed`,
  chunk 0 of each epoch: the rare extra chunks are left out). For a
  generated run only the lines of `pairs` are kept, so the set stays small
  whatever the stream's length.
  """
  if config.train_data != "generated":
    path = data_lib.split_paths(config.data_dir)["train"]
    if not path.exists():
      return f"no training split at {path}", None
    return str(path), {f"{factored}={expanded}"
                       for factored, expanded in data_lib.read_pairs(path, skip_bad=True).pairs}
  state = record.iterator
  if input_pipeline.GENERATED_STATE_KEY not in state:
    return "generated lines, but the checkpoint does not say how many", None
  per_epoch = int(state[input_pipeline.GENERATED_STATE_KEY])
  epochs = int(state["epoch"]) + (1 if int(state["position"]) > 0 else 0)
  test_lines = {f"{factored}={expanded}" for factored, expanded in pairs}
  seen = set()
  for epoch in tqdm.tqdm(range(epochs), desc="training lines", unit="epoch",
                         disable=jax.process_index() != 0, file=sys.stderr):
    seen.update(test_lines.intersection(
        input_pipeline.generated_lines(config.data_seed, per_epoch, epoch, 0)))
  return (f"generated lines: {epochs} epoch{'' if epochs == 1 else 's'} of {per_epoch:,} "
          f"(data seed {config.data_seed})", seen)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Scores the best checkpoint of `workdir` on the test file; returns the metrics.

  Every process decodes; the first prints, writes `predictions.tsv`,
  `metrics.json` and TensorBoard scalars (`test/...`) into
  `config.eval.output_dir` (default: `default_output_dir`).
  """
  config_checks.check_config(config)
  eval_cfg = config.eval
  is_main = jax.process_index() == 0
  run_config = workdir_lib.run_config(config, workdir)
  test_file = resolve_test_file(run_config)  # before the restore: a missing file is quick to tell
  model = inference.restore_for_inference(config, workdir)
  max_len = model.model_cfg.max_len
  pairs = data_lib.read_pairs(test_file, skip_bad=config.skip_bad_lines).pairs
  if eval_cfg.limit and eval_cfg.limit > 0:
    pairs = pairs[: eval_cfg.limit]
  method = "greedy" if eval_cfg.beam_size <= 1 else (
      f"beam {eval_cfg.beam_size}, length penalty {eval_cfg.length_penalty}")
  if is_main:
    print(f"evaluating {model.source} (step {model.step}) on {len(pairs):,} lines of "
          f"{test_file} ({method})", flush=True)
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=max_len, beam_size=eval_cfg.beam_size,
                           length_penalty=eval_cfg.length_penalty,
                           batching=input_pipeline.batching(config, model.mesh))
  source_ids = model.vocab.encode_batch([factored for factored, _ in pairs], max_len)
  compile_seconds = decoder.warm_up(source_ids, batch_size=eval_cfg.batch_size)
  start = time.perf_counter()
  predictions = decoder.decode_ids(source_ids, batch_size=eval_cfg.batch_size, progress=True)
  decode_seconds = time.perf_counter() - start

  trained_on, seen_lines = _training_lines(run_config, model.record, pairs)
  if seen_lines is None and is_main:
    print(f"{trained_on}: no seen/unseen figures", file=sys.stderr)
  metrics = score(pairs, predictions, seen_lines)
  metrics.update(
      compile_seconds=compile_seconds,
      decode_seconds=decode_seconds,
      decode_sequences_per_second=len(pairs) / max(decode_seconds, 1e-9),
      beam_size=eval_cfg.beam_size,
      length_penalty=eval_cfg.length_penalty,
      step=model.step,
      checkpoint=model.source,
      test_file=test_file,
      trained_on=trained_on if seen_lines is not None else None,
      devices=f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      process_count=jax.process_count(),
  )
  if not is_main:
    return metrics

  output_dir = eval_cfg.output_dir or default_output_dir(workdir)
  os.makedirs(output_dir, exist_ok=True)
  write_predictions(os.path.join(output_dir, "predictions.tsv"), pairs, predictions)
  with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
    f.write("\n")
  write_tensorboard(output_dir, model.step, metrics)

  for (factored, expanded), predicted in itertools.islice(zip(pairs, predictions),
                                                          eval_cfg.examples_to_print):
    print(f"Input: {factored}\nTarget: {expanded}\nPredicted: {predicted}\n"
          f"score: {int(predicted == expanded)}\n")
  print(_summary(metrics))
  print(f"decoded {len(pairs):,} sequences in {decode_seconds:.2f} s "
        f"({metrics['decode_sequences_per_second']:,.0f} sequences/s; "
        f"compilation {compile_seconds:.1f} s apart) on {metrics['devices']}")
  print(f"wrote {output_dir}/predictions.tsv and {output_dir}/metrics.json")
  print(f"Number Correct: {metrics['num_correct']}")
  print(f"Number of Examples: {metrics['num_examples']}")
  print(f"Final Score = {metrics['exact_match']:.4f}", flush=True)
  return metrics


def default_output_dir(workdir: str) -> str:
  """WORKDIR/eval for a training run; runs/eval/NAME for an exported model folder.

  A shipped model folder (checkpoints/NAME) stays as it was shipped.
  """
  if workdir_lib.is_exported(workdir):
    return os.path.join("runs", "eval", os.path.basename(os.path.abspath(workdir)))
  return os.path.join(workdir, "eval")


def _summary(metrics: dict) -> str:
  """A few lines: equivalence, the score by group, what went wrong."""
  groups = sorted(name[len("num_examples_"):] for name in metrics
                  if name.startswith("num_examples_"))
  lines = [f"algebraically equivalent: {metrics['equivalence']:.4f}",
           "exact match by group: " + ", ".join(
               f"{group} {metrics['exact_match_' + group]:.4f} "
               f"({metrics['num_examples_' + group]:,})" for group in groups)]
  failures = [f"{kind} {metrics['failures_' + kind]:,}" for kind in FAILURE_KINDS
              if metrics["failures_" + kind]]
  if failures:
    lines.append(f"failures ({metrics['num_failures']:,}): " + ", ".join(failures))
  return "\n".join(lines)


def write_predictions(path: str, pairs: Sequence[tuple[str, str]],
                      predictions: Sequence[str]) -> None:
  """A TSV with a header: input, target, prediction, correct (1 or 0)."""
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write("input\ttarget\tprediction\tcorrect\n")
    for (factored, expanded), predicted in zip(pairs, predictions):
      f.write(f"{factored}\t{expanded}\t{predicted}\t{int(predicted == expanded)}\n")


def write_tensorboard(logdir: str, step: int, metrics: dict) -> None:
  """The numeric metrics as `test/<name>` scalars at the checkpoint's step."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  with SummaryWriter(logdir) as writer:
    for name, value in sorted(metrics.items()):
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        writer.add_scalar(f"test/{name}", value, step)


# ---------------------------------------------------------------------------
# Prediction.


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
