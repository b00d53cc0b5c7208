"""Training and validation curves of runs, side by side, as one PNG (from their event files).

  python scripts/plot_runs.py runs/gpu/red runs/gpu/orange --out docs/red_orange.png

Four panels against the epoch (steps over each run's steps per epoch, read
from its config.json and its events; against the step where they cannot
tell, `steps_per_epoch`): training loss,
validation loss, validation token accuracy and validation exact match.
Each run is drawn in the colour of its name where it has one (red, orange),
as the reference's TensorBoard showed them. Needs matplotlib (plots only;
nothing else in the project uses it).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from polyflax import events  # pylint: disable=wrong-import-position
from polyflax import workdir as workdir_lib  # pylint: disable=wrong-import-position

PANELS = (("train/loss", "training loss"), ("val/loss", "validation loss"),
          ("val/token_accuracy", "validation token accuracy"),
          ("val/exact_match", "validation exact match (greedy)"))
COLOURS = {"red": "#d62728", "orange": "#ff7f0e"}


def steps_per_epoch(workdir: pathlib.Path, scalars: dict) -> float | None:
  """Steps per epoch of a run, or None where its events cannot tell.

  A run on generated lines that logs the training examples it has seen
  (`val/train_examples`): its examples an epoch over its examples a step.
  Otherwise the step of its first validation, which comes after
  val_check_interval of an epoch unless the run validates early
  (val_early_every_examples), where the steps are left as they are.
  """
  try:
    config = json.loads((workdir / workdir_lib.CONFIG_FILE).read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None
  validations = sorted(step for step, _ in scalars.get("val/loss", []))
  if not validations:
    return None
  examples = events.latest_by_step(scalars.get("val/train_examples", []))
  epoch_examples = (config.get("generated_examples_per_epoch", 0)
                    if config.get("train_data") == "generated" else 0)
  if examples and epoch_examples and examples[-1][1] > 0:
    step, seen = examples[-1]
    return epoch_examples * step / seen
  if config.get("val_early_every_examples", 0):
    return None
  return validations[0] / config.get("val_check_interval", 1.0)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="run folders (their name labels the curves)")
  parser.add_argument("--out", required=True, help="the PNG to write")
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  figure, axes = pyplot.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
  for run in map(pathlib.Path, args.runs):
    scalars = events.read_scalars(run)
    per_epoch = steps_per_epoch(run, scalars)
    for axis, (tag, title) in zip(axes.flat, PANELS):
      points = events.latest_by_step(scalars.get(tag, []))
      if not points:
        continue
      steps, values = zip(*points)
      x = [step / per_epoch for step in steps] if per_epoch else steps
      axis.plot(x, values, label=run.name, color=COLOURS.get(run.name),
                marker="o" if tag.startswith("val/") else None, markersize=3)
      axis.set_title(title)
      axis.set_xlabel("epoch" if per_epoch else "step")
      axis.grid(alpha=0.3)
  for axis in axes.flat:
    if axis.lines:
      axis.legend()
  if axes.flat[0].lines:
    axes.flat[0].set_yscale("log")
  if args.title:
    figure.suptitle(args.title)
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
