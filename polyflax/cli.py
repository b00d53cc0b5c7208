"""What main.py runs for each --mode, with user errors shown as one clear line.

Exit status: 0 done; 1 the training loss was not finite (or predict met a bad
expression); 2 a config, data file, checkpoint or workdir that cannot be used,
or a file that cannot be read or written; 128 + the signal number when
training stopped on SIGTERM (143) or Ctrl-C/SIGINT (130) after saving a
checkpoint (run the same command again to resume); main.py exits with 130
for Ctrl-C before training started.
"""

from __future__ import annotations

import sys

import ml_collections


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, expr: str | None = None) -> int:
  """Runs `mode`; returns the process exit status."""
  from polyflax import checkpoints, config_checks, data  # pylint: disable=g-import-not-at-top
  from polyflax import distributed  # pylint: disable=g-import-not-at-top
  try:
    # Several hosts: join the distributed runtime before any other JAX call.
    distributed.initialize(config)
    if mode == "train":
      from polyflax import train  # pylint: disable=g-import-not-at-top
      try:
        train.train_and_evaluate(config, workdir)
      except train.TrainingInterrupted as interrupted:
        return interrupted.exit_code
      except train.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
      return 0
    if mode == "evaluate":
      from polyflax import evaluate  # pylint: disable=g-import-not-at-top
      evaluate.evaluate_workdir(config, workdir)
      return 0
    if mode == "predict":
      from polyflax import evaluate  # pylint: disable=g-import-not-at-top
      return evaluate.predict_main(config, workdir, expr)
    raise ValueError(f"unknown mode {mode!r}")
  except (config_checks.ConfigError, data.DataError, checkpoints.CheckpointError,
          OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
