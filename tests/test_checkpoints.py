"""polyflax/checkpoints.py: a sound checkpoint reads in silence, a damaged one in one line.

Orbax warns when it looks for a step's metadata file (`_CHECKPOINT_METADATA`)
where there is none; reading a checkpoint that is whole must not make it say
so, since such a line reads as damage. The run is conftest's `tiny_run`,
copied before anything reads it here.
"""

import glob
import logging
import os
import shutil
import subprocess
import sys

import pytest

from polyflax import checkpoints, cli, config_files, inference, workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy(tiny_run, tmp_path):
  shutil.copytree(tiny_run.workdir, tmp_path / "run")
  return tmp_path / "run"


def _config(tiny_run, **fields):
  return config_files.tiny(tiny_run.data_dir, generated_size=2000, max_epochs=1, **fields)


def _main(tiny_run, workdir, *flags):
  return subprocess.run(
      [sys.executable, "main.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
       f"--config.data_dir={tiny_run.data_dir}", "--config.generated_size=2000",
       "--config.max_epochs=1", *flags],
      cwd=REPO, capture_output=True, text=True, timeout=600)


def _about_metadata(text):
  return [line for line in text.splitlines() if "metadata" in line.lower()]


def test_reading_a_sound_checkpoint_logs_nothing_about_metadata(tiny_run, tmp_path, caplog,
                                                               capfd):
  run = _copy(tiny_run, tmp_path)
  with caplog.at_level(logging.INFO):
    store = checkpoints.CheckpointStore(workdir_lib.checkpoints_dir(str(run)), read_only=True)
    try:
      step = store.best_step()
      assert checkpoints.PARAMS_FIELD in store.saved_fields(step)
      store.restore_record(step)
    finally:
      store.close()
    model = inference.restore_for_inference(_config(tiny_run), str(run))  # evaluate's restore
    assert model.step == step
    # A resume of the finished run (it trains nothing), and an export.
    assert cli.run("train", _config(tiny_run), str(run)) == 0
    assert cli.run("export", _config(tiny_run), str(run)) == 0
  warnings = [record.getMessage() for record in caplog.records
              if record.levelno >= logging.WARNING]
  assert not [message for message in warnings if "metadata" in message.lower()], warnings
  assert not _about_metadata(capfd.readouterr().err)


def test_evaluate_of_a_sound_checkpoint_says_nothing_about_metadata(tiny_run, tmp_path):
  run = _copy(tiny_run, tmp_path)
  result = _main(tiny_run, run, "--mode=evaluate", "--config.eval.limit=8")
  assert result.returncode == 0, result.stderr[-3000:]
  assert not _about_metadata(result.stderr), result.stderr[-3000:]


def _truncate_arrays(state_dir):
  for path in glob.glob(os.path.join(state_dir, "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def _remove_tree_metadata(state_dir):
  os.remove(os.path.join(state_dir, "_METADATA"))


@pytest.mark.parametrize("damage", [_truncate_arrays, _remove_tree_metadata],
                         ids=["truncated arrays", "no tree metadata"])
def test_evaluate_of_a_damaged_checkpoint_is_one_error_line(tiny_run, tmp_path, damage):
  run = _copy(tiny_run, tmp_path)
  store = checkpoints.CheckpointStore(workdir_lib.checkpoints_dir(str(run)), read_only=True)
  try:
    step = store.best_step()
  finally:
    store.close()
  damage(os.path.join(run, "checkpoints", str(step), checkpoints.STATE_ITEM))
  result = _main(tiny_run, run, "--mode=evaluate", "--config.eval.limit=8")
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith("error: cannot restore "), lines[0]
  assert f"checkpoint {run / 'checkpoints' / str(step)} " in lines[0], lines[0]
