"""What main.py runs for each --mode, with user errors shown as one clear line."""

from __future__ import annotations

import sys

import ml_collections


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, expr: str | None = None) -> int:
  """Runs `mode`; returns the process exit status."""
  from polyflax import checkpoints, config_checks, data  # pylint: disable=g-import-not-at-top
  try:
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
          FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
