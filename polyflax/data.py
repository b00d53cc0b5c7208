"""Data files of `factored=expanded` lines: reading, checking, generating, splitting.

This module generates data files, splits them and runs the command line.
Reading and checking a data file (`read_pairs`, `check_file`, `DataError`)
are defined in polyflax/data_reading.py; this module provides them too, so
that `data` is the one module callers import for data files.

Command line:
  python -m polyflax.data generate --n 1000000 --seed 0 --out inputs/dataset.txt
  python -m polyflax.data check FILE
  python -m polyflax.data split [--inputs inputs] [--seed 0] [--size 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
from typing import Iterable, Sequence

from absl import logging
import numpy as np

from polyflax import fileio
from polyflax import generate
# Reading and checking, provided here as data.NAME (defined in data_reading.py).
from polyflax.data_reading import (  # pylint: disable=unused-import
    MAX_REPORTED_PROBLEMS, MAX_SIDE_LENGTH, PROGRESS_BAR_MIN_LINES, CheckReport, DataError,
    ReadResult, check_file, read_pairs)

DATASET_SIZE = 1_000_000
DATASET_SEED = 0
TEST_PERCENT = 20  # Of the source rows.
VAL_PERCENT = 5  # Of the rows left for training.
SPLIT_NAMES = ("train", "val", "test")
MANIFEST_NAME = "splits.json"
MANIFEST_VERSION = 1


# ---------------------------------------------------------------------------
# Writing.


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> pathlib.Path:
  """Writes lines atomically, with ordinary permissions (see `fileio`)."""
  return fileio.write_lines_atomic(path, lines)


def generate_file(path: str | os.PathLike, n: int = DATASET_SIZE,
                  seed: int = DATASET_SEED) -> pathlib.Path:
  """Generates n lines with `generate.generate_lines` into `path`, atomically."""
  return write_lines_atomic(path, generate.generate_lines(n, seed))


# ---------------------------------------------------------------------------
# Splits.


def split_counts(n: int) -> dict[str, int]:
  """Sizes of the splits of n rows: 20% test, then 5% of the rest validation."""
  test = n * TEST_PERCENT // 100
  val = (n - test) * VAL_PERCENT // 100
  return {"train": n - test - val, "val": val, "test": test}


def split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
  """Disjoint row indices of the splits, from one seeded permutation.

  numpy's PCG64 streams are platform-independent, so the split is the same on
  every machine.
  """
  counts = split_counts(n)
  permutation = np.random.default_rng(seed).permutation(n)
  test_end = counts["test"]
  val_end = test_end + counts["val"]
  return {"test": permutation[:test_end], "val": permutation[test_end:val_end],
          "train": permutation[val_end:]}


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def split_paths(inputs_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
  """Where the splits and their manifest live in `inputs_dir`."""
  inputs = pathlib.Path(inputs_dir)
  paths = {name: inputs / f"{name}_set.txt" for name in SPLIT_NAMES}
  paths["manifest"] = inputs / MANIFEST_NAME
  return paths


def source_path(inputs_dir: str | os.PathLike) -> pathlib.Path:
  """The file the splits are cut from: train.txt if present, else dataset.txt."""
  inputs = pathlib.Path(inputs_dir)
  original = inputs / "train.txt"
  return original if original.exists() else inputs / "dataset.txt"


def _manifest_is_current(paths: dict[str, pathlib.Path], source: pathlib.Path, source_sha256: str,
                         seed: int) -> bool:
  try:
    manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return False
  if (manifest.get("version") != MANIFEST_VERSION or manifest.get("source") != source.name or
      manifest.get("source_sha256") != source_sha256 or manifest.get("seed") != seed):
    return False
  outputs = manifest.get("sha256", {})
  return all(paths[name].exists() and outputs.get(name) == _sha256(paths[name])
             for name in SPLIT_NAMES)


def ensure_splits(inputs_dir: str | os.PathLike = "inputs", seed: int = 0, *,
                  generated_size: int | None = None,
                  announce: bool = False) -> dict[str, pathlib.Path]:
  """Makes train/val/test splits of the source file unless they are current.

  The source is `inputs_dir/train.txt` if it exists, else
  `inputs_dir/dataset.txt`, generated (`generated_size` lines, default
  DATASET_SIZE, seeded with `seed`) when missing; `announce` says so on
  standard output first.
  Test is 20% of the rows, validation 5% of the rest, train the remainder,
  written as `train_set.txt`, `val_set.txt` and `test_set.txt` with a manifest
  `splits.json` (source name and sha256, seed, counts, sha256 of each split).
  The splits are rewritten only when the manifest does not match the source,
  the seed or the split files.

  Returns:
    Paths by name: "train", "val", "test", "manifest" and "source".
  """
  inputs = pathlib.Path(inputs_dir)
  source = source_path(inputs)
  if not source.exists():
    generated_size = DATASET_SIZE if generated_size is None else generated_size
    if announce:
      print(f"generating {generated_size:,} lines into {source}", flush=True)
    logging.info("generating %s (%d lines, seed %d)", source, generated_size, seed)
    generate_file(source, generated_size, seed)
  paths = split_paths(inputs)
  source_sha256 = _sha256(source)
  result = dict(paths, source=source)
  if _manifest_is_current(paths, source, source_sha256, seed):
    return result
  pairs = read_pairs(source).pairs
  lines = [f"{factored}={expanded}" for factored, expanded in pairs]
  indices = split_indices(len(lines), seed)
  for name in SPLIT_NAMES:
    write_lines_atomic(paths[name], (lines[i] for i in indices[name].tolist()))
  manifest = {
      "version": MANIFEST_VERSION,
      "source": source.name,
      "source_sha256": source_sha256,
      "seed": seed,
      "counts": {name: int(len(indices[name])) for name in SPLIT_NAMES},
      "sha256": {name: _sha256(paths[name]) for name in SPLIT_NAMES},
  }
  write_lines_atomic(paths["manifest"], [json.dumps(manifest, indent=2, sort_keys=True)])
  logging.info("wrote splits of %s: %s", source, manifest["counts"])
  return result


# ---------------------------------------------------------------------------
# Command line.


def split_command(data_dir: str | os.PathLike, seed: int, generated_size: int) -> str:
  """The command that makes the splits of `data_dir` as training would."""
  return (f"python -m polyflax.data split --inputs {os.fspath(data_dir)} --seed {seed} "
          f"--size {generated_size}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m polyflax.data",
                                   description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest="command", required=True)
  check = commands.add_parser("check", help="check that every line is exactly as in the data set")
  check.add_argument("file", help="a file of factored=expanded lines")
  check.add_argument("--max-problems", type=int, default=MAX_REPORTED_PROBLEMS,
                     help="how many offending lines to print")
  gen = commands.add_parser("generate", help="generate a data set file")
  gen.add_argument("--n", type=int, default=DATASET_SIZE, help="number of lines")
  gen.add_argument("--seed", type=int, default=DATASET_SEED, help="random seed")
  gen.add_argument("--out", default="inputs/dataset.txt", help="output file (written atomically)")
  split = commands.add_parser(
      "split", help="write the train/val/test splits if not current (generating the source "
      "dataset.txt first when the folder has no train.txt or dataset.txt)")
  split.add_argument("--inputs", default="inputs", help="directory of the source and the splits")
  split.add_argument("--seed", type=int, default=0,
                     help="seed of the split permutation (and of a generated source)")
  split.add_argument("--size", type=int, default=DATASET_SIZE,
                     help="lines generated when the folder has no source file")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status."""
  args = _parse_args(argv)
  try:
    if args.command == "check":
      report = check_file(args.file, max_problems=args.max_problems)
      for problem in report.problems:
        print(problem)
      if report.invalid > len(report.problems):
        print(f"... and {report.invalid - len(report.problems)} more invalid lines")
      print(report.summary())
      return 1 if report.invalid else 0
    if args.command == "generate":
      if args.n < 0:
        print(f"error: --n must be >= 0, got {args.n}", file=sys.stderr)
        return 2
      path = generate_file(args.out, args.n, args.seed)
      print(f"wrote {args.n} lines to {path}")
      return 0
    if args.size < 1:
      print(f"error: --size must be >= 1, got {args.size}", file=sys.stderr)
      return 2
    paths = ensure_splits(args.inputs, args.seed, generated_size=args.size, announce=True)
    manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    print(f"splits of {paths['source']}: " +
          ", ".join(f"{name} {manifest['counts'][name]} ({paths[name]})" for name in SPLIT_NAMES))
    return 0
  except (DataError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
