"""Decoding a test set and scoring it; prediction of single expressions.

`evaluate_workdir` restores the best checkpoint of a run, decodes a file of
`factored=expanded` lines with the cached decoder (greedy or beam), prints a
few examples and the score as the reference did, and writes the predictions
and `metrics.json`. `predict_main` expands expressions given on the command
line or standard input.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from typing import Sequence

import jax
import numpy as np

from polyflax import algebra
from polyflax import decode
from polyflax import train
from polyflax import vocab as vocab_lib

# The factored side of a line of the original data has at most this many characters.
MAX_INPUT_CHARS = 29
COEFFICIENT_NAMES = ("u**2", "u", "constant")


def _coefficients(text: str) -> algebra.Polynomial | None:
  try:
    return algebra.parse_polynomial(text)
  except algebra.AlgebraError:
    return None


def score(pairs: Sequence[tuple[str, str]], predictions: Sequence[str],
          seen_lines: set[str] | None = None) -> dict:
  """Exact match and the finer figures of a decoded test set.

  Args:
    pairs: (factored, expanded) rows.
    predictions: the model's expanded side for each row.
    seen_lines: `factored=expanded` lines of the training split, to split the
      score into rows seen in training and rows not seen.
  """
  counts = collections.Counter()
  groups = collections.defaultdict(lambda: [0, 0])  # name -> [correct, total]
  wrong_coefficients = collections.Counter()
  for (factored, expanded), predicted in zip(pairs, predictions):
    correct = predicted == expanded
    counts["num_correct"] += correct
    counts["num_examples"] += 1
    if correct:
      counts["num_equivalent"] += 1
    groups_of_row = []
    try:
      groups_of_row.append("shape/" + algebra.row_shape(factored))
    except algebra.AlgebraError:
      groups_of_row.append("shape/unknown")
    if algebra.is_trig(factored):
      groups_of_row.append("shape/trig")
    if seen_lines is not None:
      groups_of_row.append("seen" if f"{factored}={expanded}" in seen_lines else "unseen")
    for name in groups_of_row:
      groups[name][0] += correct
      groups[name][1] += 1
    if correct:
      continue
    target_poly = _coefficients(expanded)
    predicted_poly = _coefficients(predicted)
    if predicted_poly is None:
      wrong_coefficients["unparseable"] += 1
      continue
    if predicted_poly == target_poly:
      counts["num_equivalent"] += 1
      wrong_coefficients["printed_differently"] += 1
      continue
    if target_poly is None or (predicted_poly.unit and target_poly.unit
                               and predicted_poly.unit != target_poly.unit):
      wrong_coefficients["unit"] += 1
      continue
    for name, got, want in zip(COEFFICIENT_NAMES, predicted_poly.coefficients,
                               target_poly.coefficients):
      if got != want:
        wrong_coefficients[name] += 1
  total = max(counts["num_examples"], 1)
  metrics = {
      "exact_match": counts["num_correct"] / total,
      "num_correct": counts["num_correct"],
      "num_examples": counts["num_examples"],
      "equivalence": counts["num_equivalent"] / total,
      "num_failures": counts["num_examples"] - counts["num_correct"],
      # Among failures: how many got each coefficient wrong (a row may count
      # under several), printed a right answer differently, or wrote no polynomial.
      "wrong_coefficient_counts": dict(sorted(wrong_coefficients.items())),
  }
  for name, (correct, count) in sorted(groups.items()):
    metrics[f"exact_match_{name.replace('/', '_')}"] = correct / count
    metrics[f"num_examples_{name.replace('/', '_')}"] = count
  return metrics


def _read_lines_set(path: str) -> set[str] | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8-sig") as f:
    return {line.rstrip("\r\n") for line in f if line.strip()}


def evaluate_workdir(config, workdir: str) -> dict:
  """Scores the best checkpoint of `workdir` on `config.eval.test_file`."""
  from polyflax import data as data_lib  # pylint: disable=g-import-not-at-top
  eval_cfg = config.eval
  model = train.restore_for_inference(config, workdir)
  is_main = jax.process_index() == 0
  test_file = eval_cfg.test_file
  if test_file == "inputs/test_set.txt" and not os.path.exists(test_file):
    test_file = str(train.prepare_splits(config)["test"])
  read = data_lib.read_pairs(test_file, skip_bad=config.skip_bad_lines)
  pairs = read.pairs
  if read.skipped and is_main:
    print(f"{test_file}: skipped {read.skipped} malformed lines (the first: {read.problems[0]})",
          file=sys.stderr)
  if eval_cfg.limit and eval_cfg.limit > 0:
    pairs = pairs[: eval_cfg.limit]
  if is_main:
    print(f"evaluating checkpoint {model.checkpoint_path} on {len(pairs):,} lines of "
          f"{test_file} ({'greedy' if eval_cfg.beam_size <= 1 else f'beam {eval_cfg.beam_size}'})",
          flush=True)
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=config.max_len, beam_size=eval_cfg.beam_size,
                           length_penalty=eval_cfg.length_penalty,
                           buckets=tuple(config.length_buckets))
  source_ids = model.vocab.encode_batch([factored for factored, _ in pairs], config.max_len)
  # Compile every bucket shape first, so the timing is decoding alone.
  warmup = decoder.decode_ids(source_ids[: min(len(source_ids), 1)], batch_size=eval_cfg.batch_size)
  del warmup
  start = time.perf_counter()
  predictions = decoder.decode_ids(source_ids, batch_size=eval_cfg.batch_size, progress=True)
  decode_seconds = time.perf_counter() - start

  train_path = os.path.join(os.path.dirname(test_file) or ".", "train_set.txt")
  metrics = score(pairs, predictions, _read_lines_set(train_path))
  metrics["decode_seconds"] = decode_seconds
  metrics["decode_sequences_per_second"] = len(pairs) / max(decode_seconds, 1e-9)
  metrics["checkpoint"] = model.checkpoint_path
  metrics["test_file"] = test_file
  metrics["beam_size"] = eval_cfg.beam_size
  metrics["device"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  if not is_main:
    return metrics

  output_dir = eval_cfg.output_dir or os.path.join(workdir, "eval")
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "predictions.tsv"), "w", encoding="utf-8") as f:
    f.write("input\ttarget\tprediction\tcorrect\n")
    for (factored, expanded), predicted in zip(pairs, predictions):
      f.write(f"{factored}\t{expanded}\t{predicted}\t{int(predicted == expanded)}\n")
  with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  _write_tensorboard(workdir, model.step, metrics)

  shown = 0
  for (factored, expanded), predicted in zip(pairs, predictions):
    if shown >= eval_cfg.examples_to_print:
      break
    print(f"Input: {factored}\nTarget: {expanded}\nPredicted: {predicted}\n"
          f"score: {int(predicted == expanded)}\n")
    shown += 1
  print(f"decoded {len(pairs):,} sequences in {decode_seconds:.2f} s "
        f"({metrics['decode_sequences_per_second']:,.0f} sequences/s)")
  print(f"wrote {output_dir}/predictions.tsv and {output_dir}/metrics.json")
  print(f"Number Correct: {metrics['num_correct']}")
  print(f"Number of Examples: {metrics['num_examples']}")
  print(f"Final Score = {metrics['exact_match']:.4f}", flush=True)
  return metrics


def _write_tensorboard(workdir: str, step: int, metrics: dict) -> None:
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  with SummaryWriter(os.path.join(workdir, "eval")) as writer:
    for name, value in metrics.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        writer.add_scalar(f"test/{name}", value, step)


def check_expression(text: str, vocab: vocab_lib.Vocab) -> str:
  """The expression stripped of spaces, or AlgebraError saying what is wrong."""
  if len(text) > 4 * MAX_INPUT_CHARS:
    raise algebra.AlgebraError(f"input of {len(text)} characters is too long "
                               f"(at most {MAX_INPUT_CHARS} without spaces)")
  compact = "".join(text.split())
  if not compact:
    raise algebra.AlgebraError("empty input")
  if len(compact) > MAX_INPUT_CHARS:
    raise algebra.AlgebraError(f"input of {len(compact)} characters is too long "
                               f"(at most {MAX_INPUT_CHARS})")
  algebra.parse_polynomial(compact)  # raises on anything outside the grammar
  if vocab.unk_id in vocab.encode(compact):
    raise algebra.AlgebraError("input holds a character outside the vocabulary", compact)
  return compact


def predict_main(config, workdir: str, expr: str | None) -> int:
  """Prints the expansion of `expr`, or of each line of standard input."""
  model = train.restore_for_inference(config, workdir)
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=config.max_len, beam_size=config.eval.beam_size,
                           length_penalty=config.eval.length_penalty,
                           buckets=tuple(config.length_buckets))
  lines = [expr] if expr is not None else (line.rstrip("\n") for line in sys.stdin)
  status = 0
  for line in lines:
    if expr is None and not line.strip():
      continue
    try:
      compact = check_expression(line, model.vocab)
    except algebra.AlgebraError as error:
      print(f"error: {error}", file=sys.stderr, flush=True)
      status = 1
      continue
    (prediction,) = decoder.decode_texts([compact], batch_size=8)
    print(prediction, flush=True)
  return status
