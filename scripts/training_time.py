"""How long a run trained, from its TensorBoard event files: one line per session, and the total.

  python scripts/training_time.py runs/cpu

A run that was stopped and resumed has one event file per session. A
session's time is the wall clock from its first event to its last (set-up
before the first event, and the seconds after the last logged step, are
not counted; compilation and validation are). Steps that a session trained
again, because it resumed from a checkpoint older than where the previous
session stopped, are counted in that session's time and reported apart.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from polyflax import events  # pylint: disable=wrong-import-position


def sessions(logdir: str | pathlib.Path) -> list[dict]:
  """Per event file with training steps: first and last step logged, and their wall times."""
  found = []
  for path in events.event_files(logdir):
    logged = [(event.step, event.wall_time) for event in events.read_events(path)
              if any(value.tag.startswith("train/") for value in event.summary.value)]
    if logged:
      found.append({"file": path.name, "first_step": min(step for step, _ in logged),
                    "last_step": max(step for step, _ in logged),
                    "seconds": max(t for _, t in logged) - min(t for _, t in logged)})
  return found


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", help="a training run's folder (its event files)")
  args = parser.parse_args(argv)
  found = sessions(args.workdir)
  if not found:
    print(f"error: no training events in {args.workdir}", file=sys.stderr)
    return 1
  repeated, reached = 0, None
  for session in found:
    if reached is not None:
      repeated += max(0, reached - session["first_step"])
    reached = max(reached or 0, session["last_step"])
    print(f"{session['file']}: steps {session['first_step']:,} to {session['last_step']:,}, "
          f"{session['seconds'] / 3600:.2f} h")
  total = sum(session["seconds"] for session in found)
  print(f"total: {total / 3600:.2f} h in {len(found)} sessions, to step {reached:,} "
        f"(about {repeated:,} steps trained twice after resumes)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
