"""Tests of reading and checking data files."""

import pathlib

import pytest

from polyflax import data
from polyflax import data_reading
from polyflax import generate

GOOD = ["(21-t)*(-6*t-4)=6*t**2-122*t-84", "5*(27-6*sin(j))*sin(j)=-30*sin(j)**2+135*sin(j)",
        "-7*sin(i)**2=-7*sin(i)**2", "(z+3)**2=z**2+6*z+9"]


def write(tmp_path: pathlib.Path, content: str | bytes, name: str = "x.txt") -> pathlib.Path:
  path = tmp_path / name
  if isinstance(content, str):
    content = content.encode("utf-8")
  path.write_bytes(content)
  return path


def with_bad_third_line(bad: str) -> str:
  return "\n".join(GOOD[:2] + [bad] + GOOD[2:]) + "\n"


@pytest.mark.parametrize("bad,fragment", [
    ("(x+1)*(x+2)", "no '='"),
    ("(x+1)*(x+2)=x**2+3*x+2=1", "2 '='"),
    ("(x+1)*(x+b)=x**2+3*x+2", "unknown token 'b' at position 10 of the factored side"),
    ("(x+1)*(x+2)=x^2+3*x+2", "unknown token '^' at position 2 of the expanded side"),
    ("(x+1)*(x+2)=x**2+3*x+2 ", "whitespace"),
    ("sinx*(x+1)=1", "'sin' not followed by a variable"),
    ("xy=1", "letters 'xy'"),
    ("=x**2", "empty factored side"),
    ("x**2=", "empty expanded side"),
    ("(x+1)*(x+" + "1" * 20 + ")=1", "factored side is 30 characters long (at most 29)"),
    ("x**2=" + "1" * 30, "expanded side is 30 characters long (at most 29)"),
    ("", "blank line"),
])
def test_each_malformed_line_gives_its_error_with_line_number(tmp_path, bad, fragment):
  path = write(tmp_path, with_bad_third_line(bad))
  with pytest.raises(data_reading.DataError) as raised:
    data_reading.read_pairs(path)
  assert raised.value.line_number == 3
  assert raised.value.path == str(path)
  assert fragment in raised.value.reason
  assert str(raised.value).startswith(f"{path}:3: ")
  result = data_reading.read_pairs(path, skip_bad=True)
  assert result.skipped == 1
  assert result.pairs == [tuple(line.split("=")) for line in GOOD]
  assert result.problems[0].line_number == 3


def test_check_finds_wrong_expansions(tmp_path):
  path = write(tmp_path, with_bad_third_line("(x+1)*(x+2)=x**2+3*x+3"))
  assert len(data_reading.read_pairs(path).pairs) == 5  # Without check the line is well formed.
  with pytest.raises(data_reading.DataError) as raised:
    data_reading.read_pairs(path, check=True)
  assert str(raised.value) == (f"{path}:3: expanded side 'x**2+3*x+3' is not the expansion of "
                               "'(x+1)*(x+2)' (expected 'x**2+3*x+2')")
  path = write(tmp_path, with_bad_third_line("(x+1)*(x+2=x**2+3*x+2"))
  with pytest.raises(data_reading.DataError,
                     match=":3: factored side .* is not a polynomial: missing '\\)'"):
    data_reading.read_pairs(path, check=True)


def test_skip_bad_counts_and_reports(tmp_path, capsys):
  lines = GOOD + ["nothing", "x=y=z", "x**2=x**2", "q=1"]
  path = write(tmp_path, "\n".join(lines) + "\n")
  result = data_reading.read_pairs(path, skip_bad=True)
  assert result.skipped == 3
  assert [problem.line_number for problem in result.problems] == [5, 6, 8]
  assert len(result.pairs) == 5
  report = capsys.readouterr().err
  assert report == f"{path}: skipped 3 malformed lines (the first: {result.problems[0]})\n"


def test_crlf_bom_and_trailing_blank_lines_are_accepted(tmp_path):
  content = "\ufeff" + "\r\n".join(GOOD) + "\r\n\r\n  \n\n"
  path = write(tmp_path, content)
  pairs = data_reading.read_pairs(path, check=True).pairs
  assert pairs == [tuple(line.split("=")) for line in GOOD]
  assert data_reading.check_file(path).valid == len(GOOD)


@pytest.mark.parametrize("content,line_number,fragment", [
    (b"", 1, "empty file"),
    (b"\n\n  \n", 1, "empty file"),
    (b"\xef\xbb\xbf", 1, "empty file"),
    ("\n".join(GOOD).encode() + b"\nx\x00\x01\x02=1\n", 5, "NUL byte"),
    ("\n".join(GOOD).encode() + b"\n\xff\xfe\x89PNG=1\n", 5, "not UTF-8"),
])
def test_empty_and_binary_files_are_refused(tmp_path, content, line_number, fragment):
  path = write(tmp_path, content)
  for read in (data_reading.read_pairs, data_reading.check_file):
    with pytest.raises(data_reading.DataError) as raised:
      read(path)
    assert raised.value.line_number == line_number
    assert fragment in raised.value.reason


def test_read_pairs_of_generated_file(tmp_path):
  lines = generate.generate_lines(20_000, seed=4)
  path = data.write_lines_atomic(tmp_path / "g.txt", lines)
  result = data_reading.read_pairs(path, check=True)
  assert result.skipped == 0
  assert ["=".join(pair) for pair in result.pairs] == lines


def test_check_file_finds_non_canonical_lines(tmp_path):
  lines = generate.generate_lines(2000, seed=9)
  bad = {
      10: "(x+2)*(x+1)=x**2+3*x+2",  # Factors in the wrong order.
      20: "2*(x+1)*x=2*x**2+2*x",  # Not as the printer writes it.
      30: "(x+1)*(x+2)=2+3*x+x**2",  # Expansion in the wrong order.
      40: "(x+1)*(x+2)=x**2+3*x+3",  # Wrong expansion.
      50: "x**2+1=x**2+1",  # Not a product.
      60: "(x+1)*(y+2)=1",  # Mixed units.
      70: "(x+1)*(x+2)",  # Malformed.
  }
  for line_number, line in bad.items():
    lines[line_number - 1] = line
  path = data.write_lines_atomic(tmp_path / "c.txt", lines)
  report = data_reading.check_file(path)
  assert report.checked == 2000
  assert report.invalid == len(bad)
  assert report.valid == 2000 - len(bad)
  assert [problem.line_number for problem in report.problems] == sorted(bad)
  assert "expected '(x+1)*(x+2)'" in report.problems[0].reason
  assert "expected '2*x*(x+1)'" in report.problems[1].reason
  assert report.summary() == f"checked 2000 lines: {2000 - len(bad)} valid, {len(bad)} invalid"
