"""The table of `bench/compare_levers.py`'s arms, in Markdown: one row per arm.

  python bench/lever_table.py runs/levers [ARM ...]

Reads what the runner left in its runs folder: per arm, `ARM.json` (its
lever and the training's wall-clock seconds), `ARM.val20k/metrics.json` (the
evaluation) and the run in `ARM/` (its last checkpoint's validation history,
its config's batch). By default every arm with a record, in the comparison's
order; an arm not yet scored is left out.

Per arm: its lever (the config fields where it differs from the comparison's
base arm); exact match by greedy decoding of 20,000 generated validation
lines, and of those the two-binomial rows whose linear coefficient
s = a*d+b*c nearly cancels (1 <= |s| <= 9), is largest (|s| >= 300) or
cancels; the last validation's loss (teacher-forced, every validation line)
and exact match (1,024 lines); the steps and training examples; the training
seconds (validation apart) and the whole run's seconds (compilation and
validation included); training examples/s; and the first validation at or
above 0.7, in training examples and seconds. A cell of a group the
evaluation has no line of is empty.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from polyflax import checkpoints
from polyflax import workdir as workdir_lib

HEADER = ("| arm | lever | exact match, 20,000 val lines | of which 1 <= abs(s) <= 9 "
          "| of which abs(s) >= 300 | of which s = 0 | val loss | val exact match, 1,024 lines "
          "| steps | training examples | training s | whole run s | training examples/s "
          "| first val exact match >= 0.7 |")
# Groups of the evaluation's metrics (polyflax/scoring.py) a column adds up.
GROUP_COLUMNS = (("linear_abs_1_9",), ("linear_abs_300_399", "linear_abs_400_plus"),
                 ("linear_cancels",))


def _last_record(workdir: pathlib.Path):
  store = checkpoints.CheckpointStore(workdir / "checkpoints", read_only=True)
  try:
    return store.restore_record(store.latest_step())
  finally:
    store.close()


def arm_records(runs: pathlib.Path) -> list[dict]:
  """The runner's records (`ARM.json`) in `runs`, in their comparison's order."""
  records = [json.loads(path.read_text(encoding="utf-8")) for path in runs.glob("*.json")]
  return sorted((r for r in records if isinstance(r, dict) and "arm" in r and "lever" in r),
                key=lambda record: record["position"])


def group_cell(metrics: dict, groups: tuple[str, ...]) -> str:
  """Exact match (lines) of the evaluation's rows in any of `groups`; empty if none."""
  lines = sum(metrics.get(f"num_examples_{group}", 0) for group in groups)
  if not lines:
    return ""
  right = sum(metrics[f"exact_match_{group}"] * metrics[f"num_examples_{group}"]
              for group in groups if metrics.get(f"num_examples_{group}"))
  return f"{right / lines:.4f} ({lines:,})"


def examples_of(entry: dict, examples_per_step: int) -> int:
  """The training examples of a validation: counted, or (histories before the count) by steps."""
  counted = entry.get("examples")
  return counted if counted is not None else entry["step"] * examples_per_step


def arm_row(runs: pathlib.Path, record: dict) -> str:
  """One Markdown row of the table for the arm of `record` (its files under `runs`)."""
  arm = record["arm"]
  metrics = json.loads((runs / record["evaluate"]["output_dir"] / "metrics.json").read_text())
  # Every bucket's batch holds batch_size examples (constant_per_batch="examples").
  examples_per_step = workdir_lib.read_run_config(str(runs / arm))["batch_size"]
  history = _last_record(runs / arm).validation_history
  last = history[-1]
  steps, examples = last["step"], examples_of(last, examples_per_step)
  reached = next((entry for entry in history if (entry["exact_match"] or 0) >= 0.7), None)
  wall = record["train"].get("seconds")
  return " | ".join([
      arm, ", ".join(record["lever"]) or "(the base)",
      f"**{metrics['exact_match']:.4f}**",
      *(group_cell(metrics, groups) for groups in GROUP_COLUMNS),
      f"{last['loss']:.4f}", f"{last['exact_match']:.4f}", f"{steps:,}", f"{examples:,}",
      f"{last['train_seconds']:,.0f}", "?" if wall is None else f"{wall}",
      f"{examples / last['train_seconds']:,.0f}",
      (f"{examples_of(reached, examples_per_step):,} examples ({reached['train_seconds']:,.0f} s)"
       if reached else "not reached"),
  ]).join(["| ", " |"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", help="the --runs folder of compare_levers.py")
  parser.add_argument("arms", nargs="*", help="these arms, in this order (default: all)")
  args = parser.parse_args()
  runs = pathlib.Path(args.runs)
  records = {record["arm"]: record for record in arm_records(runs)}
  print(HEADER)
  print("| --- " * HEADER.count(" | ") + "| --- |")
  for arm in args.arms or list(records):
    record = records.get(arm)
    if record and (runs / record["evaluate"]["output_dir"] / "metrics.json").exists():
      print(arm_row(runs, record))


if __name__ == "__main__":
  main()
