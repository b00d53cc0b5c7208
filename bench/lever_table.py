"""The table of `bench/compare_cpu_levers.sh`'s arms, in Markdown: one row per arm.

  python bench/lever_table.py runs/levers [ARM ...]

Per arm: its lever (the config fields it sets), exact match by greedy
decoding of 20,000 generated validation lines (`ARM.val20k/metrics.json`),
and of those the rows whose linear term cancels, the last validation's loss
(teacher-forced, every validation line) and exact match (1,024 lines), the
training seconds (validation apart) and the whole run's seconds (compilation
and validation included), training examples/s, and the first validation at
or above 0.7.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

from polyflax import checkpoints

EXAMPLES_PER_STEP = 64  # configs/cpu.py's batch, in every bucket


def _last_record(workdir: pathlib.Path):
  store = checkpoints.CheckpointStore(workdir / "checkpoints", read_only=True)
  try:
    return store.restore_record(store.latest_step())
  finally:
    store.close()


def arm_row(runs: pathlib.Path, arm: str) -> str:
  """One Markdown row of the table for `arm` (its files under `runs`)."""
  metrics = json.loads((runs / f"{arm}.val20k" / "metrics.json").read_text())
  lever = re.findall(r"--config\.(\S+)", (runs.parent / f"{runs.name}.log").read_text()
                     .split(f"=== {arm}:")[1].splitlines()[0])
  wall = re.search(rf"{arm}: training exited \d+ after (\d+) s",
                   (runs.parent / f"{runs.name}.log").read_text())
  record = _last_record(runs / arm)
  history = record.validation_history
  last = history[-1]
  steps = last["step"]
  reached = next((entry for entry in history if (entry["exact_match"] or 0) >= 0.7), None)
  return " | ".join([
      arm, ", ".join(lever) or "configs/cpu.py",
      f"**{metrics['exact_match']:.4f}**",
      f"{metrics['exact_match_linear_cancels']:.2f} ({metrics['num_examples_linear_cancels']})",
      f"{last['loss']:.4f}", f"{last['exact_match']:.4f}", f"{steps:,}",
      f"{last['train_seconds']:,.0f}", wall.group(1) if wall else "?",
      f"{steps * EXAMPLES_PER_STEP / last['train_seconds']:,.0f}",
      f"{reached['train_seconds']:,.0f} s (step {reached['step']:,})" if reached else "not reached",
  ]).join(["| ", " |"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", help="the RUNS_DIR of compare_cpu_levers.sh")
  parser.add_argument("arms", nargs="*", default=["base", "reversed", "reversed_seed1", "ema", "mix", "lr3"])
  args = parser.parse_args()
  runs = pathlib.Path(args.runs)
  print("| arm | lever | exact match, 20,000 val lines | of which linear term cancels "
        "| val loss | val exact match, 1,024 lines | steps | training s | whole run s "
        "| training examples/s | training time to 0.7 |")
  print("| --- " * 11 + "|")
  for arm in args.arms:
    if (runs / f"{arm}.val20k" / "metrics.json").exists():
      print(arm_row(runs, arm))


if __name__ == "__main__":
  main()
