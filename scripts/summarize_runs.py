"""The summary of what `scripts/gpu_runs.sh` did in a runs folder: stages, runs, benches, failures.

  python scripts/summarize_runs.py RUNS_DIR [--stages "smoke red ..."] [--call N] [--json OUT]

It reads, where they exist:
  * RUNS_DIR/stages.tsv: one line per stage per call,
    `call<TAB>stage<TAB>status<TAB>seconds<TAB>note`; a stage's status is its
    last line's, its seconds are added up over the calls;
  * RUNS_DIR/STAGE.failed: a failed stage's reason, then the last lines of its log;
  * RUNS_DIR/environment.txt: the versions and devices the script found;
  * for each run folder RUNS_DIR/NAME (red, orange, best):
    - RUNS_DIR/NAME.calls: one line per command the script ran for it,
      `part<TAB>seconds<TAB>exit status` (part: train, eval, eval_real, ...);
    - the run's TensorBoard events: steps trained, compilation seconds (summed
      over the calls that resumed it), training examples/s (the mean over
      logging windows, which leave out compilation and validation) and the
      last validation exact match;
    - NAME/eval*/metrics.json of `--mode=evaluate`: exact match, lines,
      decode seconds (compilation apart);
  * RUNS_DIR/bench/decode.json and train_best.json of the benchmarks.
Prints Markdown; missing figures are '-'.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

RUNS = ("red", "orange", "best")
EVALS = {"eval": "test", "eval_real": "real", "eval_beam": "test, beam"}


def read_scalars(workdir: pathlib.Path) -> dict:
  """The run's event scalars; none where tensorboardX is missing (a broken environment)."""
  try:
    from polyflax import events  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {}
  return events.read_scalars(workdir)


def read_calls(path: pathlib.Path) -> dict[str, list[tuple[float, int]]]:
  """{part: [(seconds, exit status), ...]} of a run's calls file."""
  calls: dict[str, list[tuple[float, int]]] = {}
  if path.exists():
    for line in path.read_text(encoding="utf-8").splitlines():
      part, seconds, status = line.split("\t")
      calls.setdefault(part, []).append((float(seconds), int(status)))
  return calls


def read_json(path: pathlib.Path) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_stages(runs_dir: pathlib.Path, order: list[str]) -> list[dict]:
  """Each stage's last status, its seconds over all calls, and a failed stage's log tail."""
  stages: dict[str, dict] = {}
  ledger = runs_dir / "stages.tsv"
  if ledger.exists():
    for line in ledger.read_text(encoding="utf-8").splitlines():
      fields = line.split("\t")
      if len(fields) != 5:
        continue
      call, name, status, seconds, note = fields
      stage = stages.setdefault(name, {"name": name, "seconds": 0})
      stage.update(call=int(call), status=status, note=note)
      stage["seconds"] += int(seconds)
  names = [name for name in stages if name not in order]
  names = [name for name in names if name == "setup"] + order + [
      name for name in names if name != "setup"]
  result = []
  for name in names:
    stage = stages.get(name, {"name": name, "seconds": 0, "status": "not run", "call": None,
                              "note": ""})
    failed = runs_dir / f"{name}.failed"
    if stage["status"] == "failed" and failed.exists():
      stage["log_tail"] = failed.read_text(encoding="utf-8", errors="replace").rstrip("\n")
    result.append(stage)
  return result


def run_figures(runs_dir: pathlib.Path, name: str) -> dict | None:
  """The figures of one run, or None if it has not started."""
  workdir = runs_dir / name
  calls = read_calls(runs_dir / f"{name}.calls")
  if not workdir.exists() and not calls:
    return None
  scalars = read_scalars(workdir) if workdir.exists() else {}
  train_calls = calls.get("train", [])
  # Examples over the training clock at the last validation (compilation and
  # validations left out); a mean of the logged windows where a run has not
  # validated. The windows' unweighted mean overstated red's speed on the
  # first GPU lease (docs/results.md, "Red on one H200").
  trained_examples = scalars.get("val/train_examples", [])
  trained_seconds = scalars.get("val/train_seconds", [])
  examples_per_second = [value for _, value in scalars.get("train/examples_per_second", [])]
  if trained_examples and trained_seconds and trained_seconds[-1][1] > 0:
    examples_per_second = [trained_examples[-1][1] / trained_seconds[-1][1]]
  validations = sorted(dict(scalars.get("val/exact_match", [])).items())
  figures = {
      "name": name,
      "steps": max((step for step, _ in scalars.get("train/loss", [])), default=None),
      "train_seconds": sum(seconds for seconds, _ in train_calls) if train_calls else None,
      "train_calls": len(train_calls),
      "finished": (workdir / "trained").exists(),
      "failed": (runs_dir / f"{name}.failed").exists(),
      "compile_seconds": sum(value for _, value in scalars.get("train/compile_seconds", []))
                         if "train/compile_seconds" in scalars else None,
      "examples_per_second": (sum(examples_per_second) / len(examples_per_second)
                              if examples_per_second else None),
      "last_validation": list(validations[-1]) if validations else None,
  }
  for folder, label in EVALS.items():
    metrics = read_json(workdir / folder / "metrics.json")
    if metrics:
      figures[label] = {key: metrics.get(key) for key in (
          "exact_match", "num_examples", "decode_seconds", "compile_seconds", "beam_size",
          "exact_match_shape_binomials", "exact_match_unseen")}
  return figures


def _number(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def stage_table(stages: list[dict]) -> str:
  lines = ["| stage | status | seconds | note |", "| --- | --- | --- | --- |"]
  for stage in stages:
    status = stage["status"] + (f" (call {stage['call']})" if stage["call"] else "")
    note = stage["note"].replace("|", "/")
    lines.append(f"| {stage['name']} | {status} | {stage['seconds']} | {note} |")
  return "\n".join(lines)


def table(all_figures: list[dict]) -> str:
  """The Markdown table of the runs' figures."""
  header = ("| run | steps | training wall s | of which compile s | examples/s | "
            "exact match, test (lines) | exact match, real (lines) | decode s, test greedy | "
            "test with beam | last validation exact match (step) |")
  lines = [header, "|" + "|".join([" --- "] * (header.count("|") - 1)) + "|"]
  for figures in all_figures:
    state = " (failed)" if figures["failed"] else "" if figures["finished"] else " (unfinished)"
    cells = [figures["name"] + state,
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
    last = figures["last_validation"]
    cells.append("-" if not last else f"{last[1]:.4f} ({last[0]:,})")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def bench_lines(runs_dir: pathlib.Path) -> list[str]:
  lines = []
  decode = read_json(runs_dir / "bench" / "decode.json")
  greedy = (decode or {}).get("results", {}).get("greedy")
  if greedy:
    lines.append(f"- decode bench: {decode['num']:,} lines greedy in "
                 f"{greedy['decode_seconds']:.2f} s ({greedy['sequences_per_second']:,.0f} "
                 f"sequences/s, batch {decode['batch_size']}), compilation "
                 f"{greedy['compile_seconds']:.1f} s apart, on {decode['devices']}")
  train = read_json(runs_dir / "bench" / "train_best.json")
  if train and "steps_per_second" in train:
    examples = train.get("examples_per_second")
    lines.append(f"- best's training bench: {train['steps_per_second']:,.1f} steps/s"
                 + (f", {examples:,.0f} examples/s" if examples else "")
                 + f" ({train.get('config', '?')})")
  max_steps = runs_dir / "best.max_steps"
  if max_steps.exists():
    lines.append(f"- best trains for max_steps={max_steps.read_text().strip()}")
  return lines


def summary(runs_dir: pathlib.Path, order: list[str], call: int | None) -> tuple[str, dict]:
  stages = read_stages(runs_dir, order)
  runs = [figures for name in RUNS if (figures := run_figures(runs_dir, name)) is not None]
  parts = [f"# GPU runs in {runs_dir}" + (f", after call {call}" if call else "")]
  environment = runs_dir / "environment.txt"
  if environment.exists():
    parts.append(environment.read_text(encoding="utf-8").strip())
  parts.append(stage_table(stages))
  parts.append(table(runs) if runs else "no training runs yet")
  benches = bench_lines(runs_dir)
  if benches:
    parts.append("\n".join(benches))
  for stage in stages:
    if "log_tail" in stage:
      parts.append(f"## {stage['name']} failed (call {stage['call']})\n\n```\n"
                   f"{stage['log_tail']}\n```")
  return "\n\n".join(parts), {"stages": stages, "runs": runs}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs_dir")
  parser.add_argument("--stages", default="", help="the stages in the order to list them")
  parser.add_argument("--call", type=int, default=None, help="the call just made")
  parser.add_argument("--json", default=None, help="also write the figures here")
  args = parser.parse_args(argv)
  runs_dir = pathlib.Path(args.runs_dir)
  text, figures = summary(runs_dir, args.stages.split(), args.call)
  print(text)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(figures, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
