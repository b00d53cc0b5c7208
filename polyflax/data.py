"""Data files of `factored=expanded` lines: reading, checking, generating, splitting.

Command line:
  python -m polyflax.data generate --n 1000000 --seed 0 --out inputs/dataset.txt
  python -m polyflax.data check FILE
  python -m polyflax.data split [--inputs inputs] [--seed 0] [--size 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import sys
from typing import Iterable, Sequence

from absl import logging
import numpy as np
import tqdm

from polyflax import algebra
from polyflax import fileio
from polyflax import generate

# The longest side of the original data set has 29 characters.
MAX_SIDE_LENGTH = 29
# How many offending lines `check` reports.
MAX_REPORTED_PROBLEMS = 20
# Files with at least this many lines get a progress bar on stderr.
PROGRESS_BAR_MIN_LINES = 100_000

DATASET_SIZE = 1_000_000
DATASET_SEED = 0
TEST_PERCENT = 20  # Of the source rows.
VAL_PERCENT = 5  # Of the rows left for training.
SPLIT_NAMES = ("train", "val", "test")
MANIFEST_NAME = "splits.json"
MANIFEST_VERSION = 1

# A line of allowed characters; most lines (those without sin/cos/tan) are
# then well formed at the token level when no two letters are adjacent.
_PLAIN_LINE_RE = re.compile(r"([-+*()0-9achijknostxyz]+)=([-+*()0-9achijknostxyz]+)")
_ADJACENT_LETTERS_RE = re.compile(r"[a-z]{2}")
# A side whose letters are single variables or sin/cos/tan(v).
_SIDE_PATTERN = r"(?:[-+*()0-9]+|(?:sin|cos|tan)\([achijknostxyz]\)|[achijknostxyz](?![a-z]))+"
_LINE_RE = re.compile(rf"({_SIDE_PATTERN})=({_SIDE_PATTERN})")
_WHITESPACE_RE = re.compile(r"\s")
# A whole file of well-formed lines, checked at once: allowed characters and
# side lengths by one regex, and every run of two or more letters must be
# sin/cos/tan of a variable.
_FILE_RE = re.compile(rf"(?:[-+*()0-9achijknostxyz]{{1,{MAX_SIDE_LENGTH}}}="
                      rf"[-+*()0-9achijknostxyz]{{1,{MAX_SIDE_LENGTH}}}\n)*")
_LETTER_RUN_RE = re.compile(r"[a-z]{2,}(?:\([a-z]\))?")
_FUNCTION_UNITS = frozenset(unit for unit in algebra.UNITS if "(" in unit)
_LETTERS_RE = re.compile(r"[a-z]+")


class DataError(ValueError):
  """A bad data file or line.

  Attributes:
    path: the file.
    line_number: 1-based number of the offending line.
    reason: what is wrong with it.
  """

  def __init__(self, path: str | os.PathLike, line_number: int, reason: str):
    self.path = str(path)
    self.line_number = line_number
    self.reason = reason
    super().__init__(f"{self.path}:{line_number}: {reason}")


@dataclasses.dataclass(frozen=True)
class ReadResult:
  """What `read_pairs` read.

  Attributes:
    pairs: (factored, expanded) of every good line, in file order.
    skipped: the number of bad lines left out (only with skip_bad=True).
    problems: the first bad lines (at most MAX_REPORTED_PROBLEMS).
  """

  pairs: list[tuple[str, str]]
  skipped: int = 0
  problems: tuple[DataError, ...] = ()

  def skipped_report(self) -> str:
    """The one line that says how many lines were skipped, and the first of them."""
    if not self.skipped:
      return ""
    first = self.problems[0]
    return f"{first.path}: skipped {self.skipped} malformed lines (the first: {first})"


@dataclasses.dataclass(frozen=True)
class CheckReport:
  """What `check_file` found.

  Attributes:
    path: the checked file.
    checked: the number of lines checked.
    valid: the number of lines that are exactly as the original data set
      writes them.
    problems: the first offending lines (at most max_problems of them).
  """

  path: str
  checked: int
  valid: int
  problems: tuple[DataError, ...]

  @property
  def invalid(self) -> int:
    return self.checked - self.valid

  def summary(self) -> str:
    return f"checked {self.checked} lines: {self.valid} valid, {self.invalid} invalid"


# ---------------------------------------------------------------------------
# Reading.


def _read_lines(path: str | os.PathLike) -> list[str]:
  """The lines of a text file, refusing files that are not data text.

  Accepts a UTF-8 byte-order mark, CRLF line endings and trailing blank lines
  (which are dropped).

  Raises:
    DataError: for an empty file, NUL bytes or bytes that are not UTF-8.
  """
  data = pathlib.Path(path).read_bytes()
  nul = data.find(b"\0")
  if nul >= 0:
    raise DataError(path, data.count(b"\n", 0, nul) + 1, "binary data (NUL byte), not a text file")
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as error:
    line_number = data.count(b"\n", 0, error.start) + 1
    reason = f"not UTF-8 text (byte 0x{data[error.start]:02x} at byte offset {error.start})"
    raise DataError(path, line_number, reason) from None
  if text.startswith("\ufeff"):
    text = text[1:]
  lines = text.split("\n")
  if "\r" in text:
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise DataError(path, 1, "empty file")
  return lines


def _side_problem(side: str, name: str) -> str | None:
  """Why one side of a line is malformed at the token level (None if it is not)."""
  if not side:
    return f"empty {name} side"
  if len(side) > MAX_SIDE_LENGTH:
    return f"{name} side is {len(side)} characters long (at most {MAX_SIDE_LENGTH})"
  whitespace = _WHITESPACE_RE.search(side)
  if whitespace:
    return f"unexpected whitespace at position {whitespace.start() + 1} of the {name} side '{side}'"
  try:
    algebra.tokenize(side)
  except algebra.AlgebraError as error:
    where = f" at position {error.position}" if error.position is not None else ""
    return f"{error.reason}{where} of the {name} side '{side}'"
  if not re.fullmatch(_SIDE_PATTERN, side):
    for letters in _LETTERS_RE.finditer(side):
      if len(letters.group()) > 1 and not re.match(r"(?:sin|cos|tan)\(", side[letters.start():]):
        return (f"letters '{letters.group()}' at position {letters.start() + 1} of the {name} side "
                f"'{side}' are neither a variable nor sin/cos/tan")
    return f"malformed {name} side '{side}'"
  return None


def _line_problem(line: str) -> str:
  """Why a line that does not match `_LINE_RE` (or is too long) is malformed."""
  if not line.strip():
    return "blank line"
  count = line.count("=")
  if count == 0:
    return "no '=' in the line (expected factored=expanded)"
  if count > 1:
    return f"{count} '=' in the line (expected exactly one)"
  factored, expanded = line.split("=")
  return (_side_problem(factored, "factored") or _side_problem(expanded, "expanded") or
          f"malformed line '{line}'")


def _split_line(line: str) -> tuple[str, str] | str:
  """(factored, expanded) of a well-formed line, else the reason it is not."""
  match = _PLAIN_LINE_RE.fullmatch(line)
  if match is not None and _ADJACENT_LETTERS_RE.search(line):
    match = _LINE_RE.fullmatch(line)
  if match is not None:
    factored, expanded = match.groups()
    if len(factored) <= MAX_SIDE_LENGTH and len(expanded) <= MAX_SIDE_LENGTH:
      return factored, expanded
  return _line_problem(line)


def _expansion_problem(factored: str, expanded: str) -> str | None:
  """Why `expanded` is not the canonical expansion of `factored` (None if it is)."""
  try:
    expected = algebra.expand(factored)
  except algebra.AlgebraError as error:
    return f"factored side '{factored}' is not a polynomial: {error}"
  if expected != expanded:
    return _not_expansion(factored, expanded, expected)
  return None


def _not_expansion(factored: str, expanded: str, expected: str) -> str:
  return (f"expanded side '{expanded}' is not the expansion of '{factored}' "
          f"(expected '{expected}')")


def read_pairs(path: str | os.PathLike, *, check: bool = False,
               skip_bad: bool = False) -> ReadResult:
  """Reads a file of `factored=expanded` lines.

  Args:
    path: the file.
    check: also require every expanded side to be the canonical expansion of
      its factored side (slower).
    skip_bad: leave bad lines out (counted in `skipped`, first ones in
      `problems`, and reported in one line on standard error) instead of
      stopping at the first.

  Returns:
    The pairs, the number of skipped lines and the first problems.

  Raises:
    DataError: with file, line number and reason, for the first bad line
      (unless skip_bad), an empty file or a binary file.
  """
  lines = _read_lines(path)
  text = "\n".join(lines) + "\n"
  # Usually every line is well formed, which two regex scans of the whole
  # text establish much faster than a look at each line.
  well_formed = (bool(_FILE_RE.fullmatch(text)) and
                 set(_LETTER_RUN_RE.findall(text)) <= _FUNCTION_UNITS)
  del text
  if well_formed and not check:
    return ReadResult(pairs=[tuple(line.split("=")) for line in lines])
  pairs = []
  problems = []
  skipped = 0
  for line_number, line in enumerate(lines, start=1):
    result = tuple(line.split("=")) if well_formed else _split_line(line)
    if not isinstance(result, str) and check:
      result = _expansion_problem(*result) or result
    if isinstance(result, str):
      error = DataError(path, line_number, result)
      if not skip_bad:
        raise error
      skipped += 1
      if len(problems) < MAX_REPORTED_PROBLEMS:
        problems.append(error)
      continue
    pairs.append(result)
  result = ReadResult(pairs=pairs, skipped=skipped, problems=tuple(problems))
  if skipped:
    print(result.skipped_report(), file=sys.stderr, flush=True)
  return result


def _canonical_problem(factored: str, expanded: str) -> str | None:
  """Why a well-formed line is not exactly as the original data set writes it."""
  try:
    form = algebra.parse_factored(factored)
  except algebra.AlgebraError as error:
    return f"factored side '{factored}' is not a product of two linear factors: {error}"
  printed = algebra.format_factored(*form)
  if printed != factored:
    return f"factored side '{factored}' is not written as in the data set (expected '{printed}')"
  expected = form.expanded()
  if expected != expanded:
    return _not_expansion(factored, expanded, expected)
  return None


def check_file(path: str | os.PathLike, max_problems: int = MAX_REPORTED_PROBLEMS) -> CheckReport:
  """Checks that every line is exactly as the original data set writes it.

  A line is valid when it is `factored=expanded` within the length limit,
  its factored side is a product of two linear factors printed exactly as
  `format_factored` prints it, and its expanded side is the canonical
  expansion.

  Raises:
    DataError: for an empty or binary file (nothing to check line by line).
  """
  lines = _read_lines(path)
  problems = []
  valid = 0
  numbered: Iterable[tuple[int, str]] = enumerate(lines, start=1)
  if len(lines) >= PROGRESS_BAR_MIN_LINES:
    numbered = tqdm.tqdm(numbered, total=len(lines), desc=f"checking {path}", unit=" lines",
                         file=sys.stderr, mininterval=0.5)
  for line_number, line in numbered:
    result = _split_line(line)
    if not isinstance(result, str):
      result = _canonical_problem(*result)
      if result is None:
        valid += 1
        continue
    if len(problems) < max_problems:
      problems.append(DataError(path, line_number, result))
  return CheckReport(path=str(path), checked=len(lines), valid=valid, problems=tuple(problems))


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
