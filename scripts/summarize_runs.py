"""The summary table of the runs `scripts/gpu_runs.sh` made (or any runs folder laid out so).

  python scripts/summarize_runs.py RUNS_DIR [--json OUT]

For each run folder RUNS_DIR/NAME (red, orange, best) it reads:
  * RUNS_DIR/NAME.calls: one line per command the script ran for it,
    `part<TAB>seconds<TAB>exit status` (part: train, eval, eval_real, eval_beam);
  * the run's TensorBoard events: steps trained, compilation seconds (summed
    over the calls that resumed it) and training examples/s (the mean over
    logging windows, which leave out compilation and validation);
  * NAME/eval*/metrics.json of `--mode=evaluate`: exact match, lines, decode
    seconds (compilation apart).
Prints a Markdown table; missing figures are '-'.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from polyflax import events  # pylint: disable=wrong-import-position

RUNS = ("red", "orange", "best")
EVALS = {"eval": "test", "eval_real": "real", "eval_beam": "test, beam"}


def read_calls(path: pathlib.Path) -> dict[str, list[tuple[float, int]]]:
  """{part: [(seconds, exit status), ...]} of a run's calls file."""
  calls: dict[str, list[tuple[float, int]]] = {}
  if path.exists():
    for line in path.read_text(encoding="utf-8").splitlines():
      part, seconds, status = line.split("\t")
      calls.setdefault(part, []).append((float(seconds), int(status)))
  return calls


def read_metrics(path: pathlib.Path) -> dict | None:
  if not path.exists():
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def run_figures(runs_dir: pathlib.Path, name: str) -> dict | None:
  """The figures of one run, or None if it has not started."""
  workdir = runs_dir / name
  calls = read_calls(runs_dir / f"{name}.calls")
  if not workdir.exists() and not calls:
    return None
  scalars = events.read_scalars(workdir) if workdir.exists() else {}
  train_calls = calls.get("train", [])
  examples_per_second = [value for _, value in scalars.get("train/examples_per_second", [])]
  figures = {
      "name": name,
      "steps": max((step for step, _ in scalars.get("train/loss", [])), default=None),
      "train_seconds": sum(seconds for seconds, _ in train_calls) if train_calls else None,
      "train_calls": len(train_calls),
      "finished": (workdir / "trained").exists(),
      "compile_seconds": sum(value for _, value in scalars.get("train/compile_seconds", []))
                         if "train/compile_seconds" in scalars else None,
      "examples_per_second": (sum(examples_per_second) / len(examples_per_second)
                              if examples_per_second else None),
  }
  for folder, label in EVALS.items():
    metrics = read_metrics(workdir / folder / "metrics.json")
    if metrics:
      figures[label] = {key: metrics.get(key) for key in (
          "exact_match", "num_examples", "decode_seconds", "compile_seconds", "beam_size",
          "exact_match_shape_binomials", "exact_match_unseen")}
  return figures


def _number(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def table(all_figures: list[dict]) -> str:
  """The Markdown table of the runs' figures."""
  header = ("| run | steps | training wall s | of which compile s | examples/s | "
            "exact match, test (lines) | exact match, real (lines) | decode s, test greedy | "
            "test with beam |")
  lines = [header, "|" + "|".join([" --- "] * (header.count("|") - 1)) + "|"]
  for figures in all_figures:
    cells = [figures["name"] + ("" if figures["finished"] else " (unfinished)"),
             _number(figures["steps"], ","),
             _number(figures["train_seconds"], ".0f")
             + (f" ({figures['train_calls']} calls)" if figures["train_calls"] > 1 else ""),
             _number(figures["compile_seconds"], ".1f"),
             _number(figures["examples_per_second"], ",.0f")]
    for label in ("test", "real"):
      result = figures.get(label)
      cells.append("-" if not result else
                   f"{result['exact_match']:.4f} ({result['num_examples']:,})")
    test = figures.get("test")
    cells.append("-" if not test else f"{test['decode_seconds']:.2f}")
    beam = figures.get("test, beam")
    cells.append("-" if not beam else
                 f"{beam['exact_match']:.4f} (beam {beam['beam_size']}, "
                 f"{beam['decode_seconds']:.2f} s)")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs_dir")
  parser.add_argument("--json", default=None, help="also write the figures here")
  args = parser.parse_args(argv)
  runs_dir = pathlib.Path(args.runs_dir)
  all_figures = [figures for name in RUNS
                 if (figures := run_figures(runs_dir, name)) is not None]
  print(table(all_figures) if all_figures else f"no runs in {runs_dir} yet")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(all_figures, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
