"""Reading and checking data files of `factored=expanded` lines.

`read_pairs` reads a file into its (factored, expanded) pairs, refusing (or,
asked to, skipping) malformed lines with file, line number and reason;
`check_file` checks that every line is exactly as the original data set
writes it. Both raise `DataError`. Making the files (generating, splitting)
and the `python -m polyflax.data` command are polyflax/data.py's.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import sys
from typing import Iterable

import tqdm

from polyflax import algebra

# The longest side of the original data set has 29 characters.
MAX_SIDE_LENGTH = 29
# How many offending lines `check` reports.
MAX_REPORTED_PROBLEMS = 20
# Files with at least this many lines get a progress bar on stderr.
PROGRESS_BAR_MIN_LINES = 100_000

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
