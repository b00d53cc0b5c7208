"""When a run's validation exact match first reached each threshold: time, examples and step.

  python scripts/time_to_accuracy.py runs/cpu
  python scripts/time_to_accuracy.py checkpoints/cpu/model.json --thresholds 0.9 0.99

The argument is a training run's folder or an exported model (its folder
or its model.json). A run's folder is read from its event files
(`val/exact_match`, `val/train_seconds` and `val/train_examples`, the last
value of each step where a resumed run logged a step twice), or, when they
lack the training seconds, from its latest checkpoint's validation history;
an exported model from the history its card carries. The time is the run's
training time, validation apart, summed over its sessions
(`progress.TrainingClock`); the examples are the training examples the run
had seen by then (`progress.RunProgress.train_examples`), which compare runs
on machines of any speed. Histories from before the examples were counted
say "examples unknown". Runs trained before the history was recorded have
none and are refused with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from polyflax import events  # pylint: disable=wrong-import-position

DEFAULT_THRESHOLDS = (0.8875, 0.99, 0.999)
MODEL_CARD_FILE = "model.json"  # as polyflax.workdir names it


def history_from_card(path: pathlib.Path) -> list[dict]:
  """The validation history of an exported model's card (empty if it has none)."""
  card = json.loads(path.read_text(encoding="utf-8"))
  return list(card.get("validation_history") or [])


def history_from_events(logdir: pathlib.Path) -> list[dict]:
  """{step, train_seconds, examples, exact_match} of each validation logged in `logdir`.

  `examples` is None at a step without `val/train_examples` (logged before
  the examples were counted). Event scalars are float32: counts past 2**24
  (16,777,216) read rounded, where the checkpoint's history is exact.
  """
  scalars = events.read_scalars(logdir)
  seconds = dict(events.latest_by_step(scalars.get("val/train_seconds", [])))
  examples = dict(events.latest_by_step(scalars.get("val/train_examples", [])))
  exact_match = dict(events.latest_by_step(scalars.get("val/exact_match", [])))
  return [{"step": step, "train_seconds": seconds[step],
           "examples": None if step not in examples else int(round(examples[step])),
           "exact_match": exact_match[step]}
          for step in sorted(seconds.keys() & exact_match.keys())]


def history_from_checkpoint(workdir: pathlib.Path) -> list[dict]:
  """The validation history in the record of `workdir`'s latest checkpoint (empty if none)."""
  from polyflax import checkpoints  # pylint: disable=import-outside-toplevel  # imports jax
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return []
  store = checkpoints.CheckpointStore(str(directory), read_only=True)
  try:
    latest = store.latest_step()
    return [] if latest is None else list(store.restore_record(latest).validation_history)
  finally:
    store.close()


def read_history(source: str) -> tuple[str, list[dict]]:
  """(where the history was found, the history) of a run folder, export folder or model.json."""
  path = pathlib.Path(source)
  if path.is_dir() and (path / MODEL_CARD_FILE).is_file():
    path = path / MODEL_CARD_FILE
  if path.is_file():
    return f"{path} (exported model card)", history_from_card(path)
  if not path.is_dir():
    raise FileNotFoundError(f"no such run folder or model card: {source}")
  history = history_from_events(path)
  if history:
    return f"{path} (event files)", history
  return f"{path} (latest checkpoint's record)", history_from_checkpoint(path)


def first_reached(history: list[dict], threshold: float) -> dict | None:
  """The earliest validation (by step) whose exact match is at least `threshold`; None if none."""
  for entry in sorted(history, key=lambda entry: entry["step"]):
    if entry.get("exact_match") is not None and entry["exact_match"] >= threshold:
      return entry
  return None


def clock_time(seconds: float) -> str:
  """h:mm:ss of `seconds`, rounded to the second (hours go past 24)."""
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}"


def examples_seen(entry: dict) -> str:
  """"301,248 examples", or "examples unknown" for an entry from before they were counted."""
  examples = entry.get("examples")
  return "examples unknown" if examples is None else f"{examples:,} examples"


def report_lines(history: list[dict], thresholds: list[float]) -> list[str]:
  """One line per threshold: when it was first reached (time, examples, step), or "not reached"."""
  lines = []
  for threshold in thresholds:
    entry = first_reached(history, threshold)
    if entry is None:
      lines.append(f"exact match >= {threshold:g}: not reached")
    else:
      lines.append(f"exact match >= {threshold:g}: {clock_time(entry['train_seconds'])} "
                   f"({entry['train_seconds']:.0f} s), {examples_seen(entry)}, "
                   f"at step {entry['step']:,} (exact match {entry['exact_match']:.4f})")
  return lines


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("source", help="a training run's folder, an exported model's folder, "
                                     "or its model.json")
  parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS),
                      metavar="FRACTION", help="exact-match thresholds, in [0, 1] "
                      f"(default: {' '.join(map(str, DEFAULT_THRESHOLDS))})")
  args = parser.parse_args(argv)
  if not all(0.0 <= threshold <= 1.0 for threshold in args.thresholds):
    parser.error("thresholds are fractions between 0 and 1")
  try:
    where, history = read_history(args.source)
  except (OSError, ValueError, RuntimeError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  scored = [entry for entry in history if entry.get("exact_match") is not None]
  if not scored:
    print(f"error: no validation history with exact match in {where} (a run trained before "
          "the history was recorded, or with val_exact_match_examples=0)", file=sys.stderr)
    return 1
  last = max(scored, key=lambda entry: entry["step"])
  print(f"{where}: {len(scored)} validations, to step {last['step']:,} after "
        f"{clock_time(last['train_seconds'])} of training (validation apart)")
  print("\n".join(report_lines(scored, args.thresholds)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
