"""Throughput of the training input pipeline on one CPU core.

Builds about a million synthetic lines shaped like the real data (products of
two linear factors in a variable or in sin/cos/tan of a variable, printed the
way the data prints them), encodes them, and times one or more epochs of
`TrainIterator` plus one pass of `eval_batches`.

Usage:
  python bench/bench_input_pipeline.py [--num_examples 1000000] [--batch_size 256]
"""

import os

# One core, one thread: set before NumPy loads its thread pools.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_variable, "1")

import argparse
import time

import numpy as np

from polyflax import bucketing  # pylint: disable=g-import-not-at-top
from polyflax import eval_batches  # pylint: disable=g-import-not-at-top
from polyflax import training_streams  # pylint: disable=g-import-not-at-top
from polyflax.vocab import Vocab  # pylint: disable=g-import-not-at-top

VARIABLES = "achijknostxyz"
# s, i and n are about twice as common as the other variables.
VARIABLE_WEIGHTS = np.array([2.0 if v in "sin" else 1.0 for v in VARIABLES])
# Coefficients of the unit: -9..-1, 1..8, with 1 five times as common.
COEFFICIENTS = np.array([c for c in range(-9, 9) if c])
COEFFICIENT_WEIGHTS = np.array([5.0 if c == 1 else 1.0 for c in COEFFICIENTS])
CONSTANTS = np.array([c for c in range(-32, 32) if c])


def _times(coefficient: int, unit: str) -> str:
  """`coefficient*unit` with a coefficient of +-1 dropped."""
  if coefficient == 1:
    return unit
  if coefficient == -1:
    return "-" + unit
  return f"{coefficient}*{unit}"


def _linear(a: int, b: int, unit: str) -> str:
  """a*unit + b, constant first when only the unit's term is negative."""
  if b == 0:
    return _times(a, unit)
  if a < 0 < b:
    return f"{b}{_times(a, unit)}"
  return f"{_times(a, unit)}{b:+d}"


def _quadratic(p2: int, p1: int, p0: int, unit: str) -> str:
  """p2*unit**2 + p1*unit + p0 in descending powers, zero terms dropped."""
  if p2 < 0 < p0 and p1 == 0:
    return f"{p0}{_times(p2, unit + '**2')}"
  terms = [_times(p2, unit + "**2")]
  if p1:
    terms.append(_times(p1, unit))
  if p0:
    terms.append(str(p0))
  text = terms[0]
  for term in terms[1:]:
    text += term if term.startswith("-") else "+" + term
  return text


def synthetic_lines(num_lines: int, seed: int) -> list[str]:
  """`factored=expanded` lines with the data's shapes, units and coefficient ranges."""
  rng = np.random.default_rng(seed)
  shapes = rng.choice(4, size=num_lines, p=[0.639, 0.321, 0.0385, 0.0015])
  variables = rng.choice(
      len(VARIABLES), size=num_lines, p=VARIABLE_WEIGHTS / VARIABLE_WEIGHTS.sum())
  functions = rng.choice(4, size=num_lines, p=[0.971, 0.0097, 0.0097, 0.0096])
  coefficient_p = COEFFICIENT_WEIGHTS / COEFFICIENT_WEIGHTS.sum()
  a, c, k = (rng.choice(COEFFICIENTS, size=num_lines, p=coefficient_p) for _ in range(3))
  b, d = (rng.choice(CONSTANTS, size=num_lines) for _ in range(2))
  lines = []
  for row in range(num_lines):
    variable = VARIABLES[variables[row]]
    function = ("", "sin", "cos", "tan")[functions[row]]
    unit = f"{function}({variable})" if function else variable
    shape = shapes[row]
    if shape == 0:  # (a*u+b)*(c*u+d)
      ar, br, cr, dr = int(a[row]), int(b[row]), int(c[row]), int(d[row])
      factored = f"({_linear(ar, br, unit)})*({_linear(cr, dr, unit)})"
      expanded = _quadratic(ar * cr, ar * dr + br * cr, br * dr, unit)
    elif shape == 1:  # k*u*(c*u+d)
      kr, cr, dr = int(k[row]), int(c[row]), int(d[row])
      factored = f"{_times(kr, unit)}*({_linear(cr, dr, unit)})"
      expanded = _quadratic(kr * cr, kr * dr, 0, unit)
    elif shape == 2:  # k*u**2
      kr = int(k[row])
      factored = expanded = _times(kr, unit + "**2")
    else:  # (a*u+b)**2
      ar, br = int(a[row]), int(b[row])
      factored = f"({_linear(ar, br, unit)})**2"
      expanded = _quadratic(ar * ar, 2 * ar * br, br * br, unit)
    lines.append(f"{factored}={expanded}")
  return lines


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_examples", type=int, default=1_000_000)
  parser.add_argument("--batch_size", type=int, default=256,
                      help="global examples per batch of the longest bucket")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

  start = time.perf_counter()
  lines = synthetic_lines(args.num_examples, args.seed)
  factored, expanded = zip(*(line.split("=") for line in lines))
  print(f"generated {len(lines):,} lines in {time.perf_counter() - start:.1f}s "
        f"(e.g. {lines[0]}, {lines[1]})")

  vocab = Vocab.default()
  start = time.perf_counter()
  src = vocab.encode_batch(factored, 32)
  tgt = vocab.encode_batch(expanded, 32)
  encode_s = time.perf_counter() - start
  print(f"encode_batch: {encode_s:.2f}s for both sides "
        f"({len(lines) / encode_s:,.0f} lines/s)")

  start = time.perf_counter()
  batching = bucketing.Batching()  # the default buckets, one device, one process
  iterator = training_streams.TrainIterator(src, tgt, batch_size=args.batch_size, seed=args.seed,
                                            batching=batching)
  layout = iterator.layout
  print(f"TrainIterator setup: {time.perf_counter() - start:.2f}s; buckets {layout.buckets}, "
        f"examples per bucket {layout.bucket_counts}, batch sizes {layout.batch_sizes}, "
        f"{iterator.steps_per_epoch} steps per epoch")

  real_tokens = int(np.count_nonzero(src) + np.count_nonzero(tgt))
  for epoch in range(args.epochs):
    start = time.perf_counter()
    examples = padded_tokens = 0
    for _ in range(iterator.steps_per_epoch):
      batch = next(iterator)
      examples += batch["inputs"].shape[0]
      padded_tokens += batch["inputs"].size + batch["targets"].size
    seconds = time.perf_counter() - start
    print(f"train epoch {epoch}: {examples:,} examples in {seconds:.2f}s = "
          f"{examples / seconds:,.0f} examples/s "
          f"({iterator.steps_per_epoch / seconds:,.0f} batches/s)")
  print(f"real tokens per padded token: {real_tokens / padded_tokens:.3f} with buckets, "
        f"{real_tokens / (2 * 32 * len(lines)):.3f} with one shape of 32")

  start = time.perf_counter()
  batches = eval_batches.EvalBatches(src, tgt, batch_size=args.batch_size, batching=batching)
  examples = sum(int(batch["example_mask"].sum()) for batch in batches)
  seconds = time.perf_counter() - start
  print(f"eval pass (setup included): {len(batches)} batches, {examples:,} examples in "
        f"{seconds:.2f}s = {examples / seconds:,.0f} examples/s")


if __name__ == "__main__":
  main()
