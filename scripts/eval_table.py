"""The exact-match figures of evaluations side by side, as a Markdown table.

  python scripts/eval_table.py real_dev=runs/eval/cpu_real/metrics.json \
      generated=runs/eval/cpu_test/metrics.json

Each argument is LABEL=PATH of a `metrics.json` written by `--mode=evaluate`;
each becomes a column. Rows: all lines, each row shape, trig rows, rows whose
linear term cancels (a*d+b*c=0), then the two-binomial rows by the size of
that linear coefficient, abs(a*d+b*c), in the bins of
`scoring.LINEAR_SIZE_BINS` in their order (0, 1-9, 10-299, 300-399, >=400),
seen and unseen lines, and each shape split into seen and unseen; a cell is
the exact match and, in brackets, the number of lines (empty where an
evaluation has no such line). Then exact match by the model's confidence
(the lowest probability of a token it chose), what the model's confidence
threshold flags (answers below it, and wrong answers among them), and last
the failures counted by the coefficient they get wrong.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from polyflax import scoring

SHAPES = (("binomials", "(a*u+b)*(c*u+d)"), ("k_u_binomial", "k*u*(c*u+d)"),
          ("monomial", "k*u**2"), ("square", "(a*u+b)**2"), ("unknown", "other"))
# Bins of the model's confidence, as polyflax/calibration.py names them.
CONFIDENCE_BINS = ("0-0.5", "0.5-0.9", "0.9-0.99", "0.99-0.999", "0.999-0.9999", "0.9999-1")
FAILURES = (("wrong_linear", "failures: linear coefficient wrong"),
            ("wrong_constant", "failures: constant wrong"),
            ("wrong_quadratic", "failures: quadratic coefficient wrong"),
            ("unparseable", "failures: not a polynomial"))


def table_rows() -> list[tuple[str, str]]:
  """(group of `scoring.row_groups`, what the table calls it), in table order."""
  rows = [("", "all lines")]
  rows += [(f"shape_{shape}", shape_name) for shape, shape_name in SHAPES]
  rows += [("shape_trig", "sin/cos/tan rows"),
           ("linear_cancels", "linear term cancels (a*d+b*c=0)")]
  # abs(), not |...|: a bar would end the Markdown cell.
  rows += [(group, f"(a*u+b)*(c*u+d), abs(a*d+b*c): {label}")
           for group, label in scoring.LINEAR_SIZE_BINS]
  rows += [("seen", "seen in training"), ("unseen", "not seen in training")]
  for seen in ("seen", "unseen"):
    rows += [(f"shape_{shape}_{seen}", f"{shape_name}, {seen}") for shape, shape_name in SHAPES]
  return rows


def cell(metrics: dict, group: str) -> str:
  suffix = f"_{group}" if group else ""
  count = metrics.get(f"num_examples{suffix}")
  if not count:
    return ""
  return f"{metrics[f'exact_match{suffix}']:.4f} ({count:,})"


def confidence_cell(metrics: dict, label: str) -> str:
  """Exact match (lines) of a confidence bin; empty where the evaluation has none."""
  count = metrics.get(f"confidence_{label}_lines")
  if not count:
    return ""
  return f"{metrics[f'confidence_{label}_exact_match']:.4f} ({count:,})"


def flag_cells(metrics: dict) -> tuple[str, str]:
  """(answers flagged, share; wrong ones flagged of all wrong); empty without a threshold."""
  if metrics.get("flagged") is None:
    return "", ""
  wrong = f"{metrics['wrong_flagged']:,} of {metrics['num_failures']:,}"
  if metrics.get("wrong_flagged_share") is not None:
    wrong += f" ({metrics['wrong_flagged_share']:.1%})"
  return f"{metrics['flagged']:,} ({metrics['flagged_share']:.2%})", wrong


def markdown(columns: list[tuple[str, dict]]) -> str:
  """The table of `columns`, (label, metrics) pairs; rows that no column has are left out."""
  lines = ["| lines | " + " | ".join(label for label, _ in columns) + " |",
           "| --- |" + " --- |" * len(columns)]
  for group, name in table_rows():
    cells = [cell(metrics, group) for _, metrics in columns]
    if any(cells):
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  for label in CONFIDENCE_BINS:
    cells = [confidence_cell(metrics, label) for _, metrics in columns]
    if any(cells):
      lines.append(f"| confidence {label} | " + " | ".join(cells) + " |")
  flags = [flag_cells(metrics) for _, metrics in columns]
  for index, name in enumerate(("flagged: confidence below the model's threshold",
                                "flagged: wrong answers")):
    if any(cells[index] for cells in flags):
      lines.append(f"| {name} | " + " | ".join(cells[index] for cells in flags) + " |")
  for kind, name in FAILURES:
    counts = [metrics.get(f"failures_{kind}") for _, metrics in columns]
    if any(counts):
      lines.append(f"| {name} | " + " | ".join(
          "" if count is None else f"{count:,}" for count in counts) + " |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("evaluations", nargs="+", metavar="LABEL=PATH",
                      help="a column's label and the metrics.json it shows")
  args = parser.parse_args(argv)
  columns = []
  for argument in args.evaluations:
    label, sep, path = argument.partition("=")
    if not sep or not label or not path:
      parser.error(f"expected LABEL=PATH, got {argument!r}")
    try:
      metrics = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
      print(f"error: cannot read {path}: {error}", file=sys.stderr)
      return 1
    columns.append((label, metrics))
  print(markdown(columns))
  return 0


if __name__ == "__main__":
  sys.exit(main())
