"""What main.py runs for each --mode, with user errors shown as one clear line.

  train     train.train_and_evaluate (the only mode that imports training code)
  evaluate  evaluate.evaluate_workdir
  predict   predict.predict_main
  export    export.export_run

Every mode first turns on jax's persistent compilation cache
(`compile_cache.enable`), so programs compiled by an earlier run load from disk.

Exit status: 0 done; 1 the training loss was not finite, or predict refused
an input (outside the grammar or the data's range; it still answered every
other input); 2 a config, data file, checkpoint or workdir that cannot be used,
or a file that cannot be read or written; 128 + the signal number when
training stopped on SIGTERM (143) or Ctrl-C/SIGINT (130) after saving a
checkpoint (run the same command again to resume); main.py exits with 130
for Ctrl-C before training started.
"""

from __future__ import annotations

import os
import sys

import ml_collections


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, expr: str | None = None,
        tsv: bool = False) -> int:
  """Runs `mode`; returns the process exit status (`expr` and `tsv`: predict's)."""
  from polyflax import checkpoints, config_checks, data  # pylint: disable=g-import-not-at-top
  from polyflax import compile_cache, distributed  # pylint: disable=g-import-not-at-top
  try:
    # Several hosts: join the distributed runtime before any other JAX call.
    distributed.initialize(config)
    # Before anything compiles: every mode keeps its compiled programs on disk.
    compile_cache.enable()
    if mode == "train":
      from polyflax import signals, train  # pylint: disable=g-import-not-at-top
      try:
        train.train_and_evaluate(config, workdir)
      except signals.TrainingInterrupted as interrupted:
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
      from polyflax import predict  # pylint: disable=g-import-not-at-top
      return predict.predict_main(config, workdir, expr, tsv=tsv)
    if mode == "export":
      from polyflax import export  # pylint: disable=g-import-not-at-top
      export_dir = config.export.dir or os.path.join(workdir, "export")
      card = export.export_run(config, workdir, export_dir)
      total, largest, largest_path = export.folder_size(export_dir)
      print(f"exported step {card['step']} ({card['parameters']:,} parameters) of {workdir} "
            f"into {export_dir}: {total / 2**20:.1f} MiB, largest file {largest_path} "
            f"{largest / 2**20:.1f} MiB")
      return 0
    raise ValueError(f"unknown mode {mode!r}")
  except (config_checks.ConfigError, data.DataError, checkpoints.CheckpointError,
          OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
