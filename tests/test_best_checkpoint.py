"""The best checkpoint: evaluate and export read the lowest validation loss, and it is kept.

In an ordinary tiny run the best checkpoint is also the latest, so nothing
there tells the two apart. Here a copy of the session's tiny run (one epoch,
its validation loss falling: conftest.py) is resumed with an absurd learning
rate, so the loss rises at every later validation and the later saves push
the best step out of the latest `checkpoints_to_keep`. The store's rules
alone are tested in test_checkpoints.py.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from checkpoint_files import read_arrays

from polyflax import checkpoints, cli, config_files, train
from polyflax.events import read_scalars

KEEP_LATEST = 3
# 2,000 generated lines: 1,520 training examples, 23 steps of 64 per epoch.
# Resumed at step 23, validation (and a checkpoint) every 6 steps and at the end.
COMMON = {"generated_size": 2000, "val_check_interval": 0.25, "val_exact_match_examples": 0,
          "log_every_steps": 6, "checkpoints_to_keep": KEEP_LATEST}


# ---------------------------------------------------------------------------
# A real run whose validation loss rises again.


@pytest.fixture(scope="module")
def rising_run(tiny_run, tmp_path_factory):
  """(data folder, workdir, {validation step: loss}) of the run described above."""
  data_dir, workdir = tiny_run.data_dir, tmp_path_factory.mktemp("rising_run") / "run"
  # One epoch as the tiny config trains it: validations at steps 12 and 23.
  shutil.copytree(tiny_run.workdir, workdir)
  # Resumed at step 23 with a learning rate 300 times the tiny config's:
  # validations at steps 24, 30 and 36, each worse than step 23.
  diverging = config_files.tiny(data_dir, max_epochs=2, max_steps=36, learning_rate=1.0,
                                lr_schedule="rsqrt", **COMMON)
  train.train_and_evaluate(diverging, str(workdir))
  val_loss = dict(read_scalars(workdir)["val/loss"])
  return data_dir, workdir, val_loss


def best_and_latest_validations(val_loss):
  best = min(val_loss, key=val_loss.get)
  return best, sorted(val_loss)[-KEEP_LATEST:]


def test_the_run_validates_worse_after_its_best_step(rising_run):
  _, _, val_loss = rising_run
  assert sorted(val_loss) == [12, 23, 24, 30, 36]
  best, latest = best_and_latest_validations(val_loss)
  assert best <= 23 and best not in latest
  assert all(val_loss[step] > val_loss[best] for step in latest)


def test_retention_keeps_the_best_step_beside_the_latest(rising_run):
  _, workdir, val_loss = rising_run
  best, latest = best_and_latest_validations(val_loss)
  store = checkpoints.CheckpointStore(str(workdir / "checkpoints"), read_only=True)
  try:
    assert store.all_steps() == sorted([best] + latest)
    assert store.best_step() == best
    assert store.latest_step() == 36
  finally:
    store.close()


def test_evaluate_scores_the_best_step(rising_run, tmp_path):
  data_dir, workdir, val_loss = rising_run
  best, _ = best_and_latest_validations(val_loss)
  output_dir = tmp_path / "eval"
  config = config_files.tiny(data_dir, **COMMON, **{"eval.limit": 40,
                                                    "eval.output_dir": str(output_dir)})
  assert cli.run("evaluate", config, str(workdir)) == 0
  metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
  assert metrics["step"] == best
  assert metrics["checkpoint"] == str(workdir / "checkpoints" / str(best))


def test_export_writes_the_best_step(rising_run, tmp_path):
  data_dir, workdir, val_loss = rising_run
  best, _ = best_and_latest_validations(val_loss)
  exported = tmp_path / "exported"
  config = config_files.tiny(data_dir, **COMMON, **{"export.dir": str(exported)})
  assert cli.run("export", config, str(workdir)) == 0
  card = json.loads((exported / "model.json").read_text(encoding="utf-8"))
  assert card["step"] == best
  assert card["trained_with"]["checkpoint"] == os.path.join("checkpoints", str(best))
  assert card["validation"]["loss"] == pytest.approx(val_loss[best], rel=1e-6)
  # The history is the whole run's, past the exported step to the latest checkpoint.
  history = card["validation_history"]
  assert [entry["step"] for entry in history] == sorted(val_loss) and history[-1]["step"] > best
  assert [entry["loss"] for entry in history] == pytest.approx(
      [val_loss[step] for step in sorted(val_loss)], rel=1e-6)
  at_best = next(entry for entry in history if entry["step"] == best)
  assert card["trained_with"]["train_seconds"] == at_best["train_seconds"] > 0
  # The exported parameters are those of the best step, not the latest.
  params = jax.tree.leaves(read_arrays(exported / "params"))
  best_params = jax.tree.leaves(read_arrays(workdir / "checkpoints" / str(best) / "state")["params"])
  latest_params = jax.tree.leaves(read_arrays(workdir / "checkpoints" / "36" / "state")["params"])
  assert len(params) == len(best_params) == len(latest_params) > 10
  for exported_array, best_array in zip(params, best_params, strict=True):
    np.testing.assert_array_equal(exported_array, best_array)
  assert any(not np.array_equal(a, b) for a, b in zip(params, latest_params, strict=True))
