"""The checkpoint store: what it keeps, what it reads back, and its faults.

Which steps it keeps and which it calls the best, with chosen validation
losses; the moving average read as the model; and a workdir that cannot be
written, a disk that fills while saving, and truncated checkpoint files,
each refused in one line. The damaged checkpoints are those of a copy of the
session's tiny run (conftest.py: checkpoints at steps 12 and 23).

A sound checkpoint also reads in silence: Orbax warns when it looks for a
step's metadata file (`_CHECKPOINT_METADATA`) where there is none, and such a
line reads as damage.
"""

import asyncio
import errno
import glob
import logging
import os
import shutil
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax import checkpoints, cli, config_files, inference, run_record
from polyflax import workdir as workdir_lib
from polyflax.run_record import RunRecord
from fault_runs import (OVERRIDES, PATIENCE_S, STEPS, TMP_SUFFIX, assert_finite, complete_steps,
                        leftover_tmp_dirs, one_error_line, run_main, tiny_config)

# The fields of a checkpoint's state before EMA existed.
PLAIN_FIELDS = {"step", "params", "opt_state", "rng"}


# ---------------------------------------------------------------------------
# The store alone, with chosen validation losses.


def small_state(step):
  return {"weights": jnp.full((4,), float(step), jnp.float32), "step": jnp.int32(step)}


def record(step, val_loss=None):
  """A run record whose validation loss is `val_loss` (None: a save without validation)."""
  return RunRecord(model={}, iterator={"position": step}, skipped_steps=0, command="test",
                   versions={}, devices="test", saved_at="test",
                   validation=None if val_loss is None else {"loss": val_loss})


def test_store_keeps_the_latest_and_the_lowest_validation_loss(tmp_path):
  losses = {1: 5.0, 2: 3.0, 3: 1.0, 4: 2.0, 5: 4.0, 6: 6.0}
  store = checkpoints.CheckpointStore(str(tmp_path), keep_latest=2)
  for step, loss in losses.items():
    assert store.save(step, small_state(step), record(step, loss))
  store.save(7, small_state(7), record(7))  # a stop-signal save: no validation
  store.close()

  reopened = checkpoints.CheckpointStore(str(tmp_path), read_only=True)
  try:
    assert reopened.all_steps() == [3, 6, 7]  # the latest two, and the best
    assert reopened.latest_step() == 7
    assert reopened.best_step() == 3
    state = reopened.restore(3, checkpoints.abstract_like(small_state(0)))
    assert reopened.restore_record(3) == record(3, 1.0)
    np.testing.assert_array_equal(state["weights"], np.full((4,), 3.0, np.float32))
  finally:
    reopened.close()


def test_without_validation_figures_the_best_step_is_the_latest(tmp_path):
  store = checkpoints.CheckpointStore(str(tmp_path), keep_latest=2)
  for step in (1, 2, 3):
    store.save(step, small_state(step), record(step))
  store.close()
  reopened = checkpoints.CheckpointStore(str(tmp_path), read_only=True)
  try:
    assert reopened.all_steps() == [2, 3]
    assert reopened.best_step() == 3
  finally:
    reopened.close()


def test_the_store_reads_the_average_as_the_model_when_saved(tmp_path):
  trained = {"w": jnp.full((4,), 1.0, jnp.float32)}
  averaged = {"w": jnp.full((4,), 0.5, jnp.float32)}
  plain = {"step": jnp.int32(1), "params": trained, "opt_state": {"mu": jnp.zeros(4)},
           "rng": jnp.zeros(2, jnp.uint32)}
  record = run_record.RunRecord(model={}, iterator={}, skipped_steps=0, command="test",
                                versions={}, devices="test", saved_at="test")
  store = checkpoints.CheckpointStore(str(tmp_path))
  store.save(1, plain, record)
  store.save(2, dict(plain, ema_params=averaged), record)
  store.close()
  store = checkpoints.CheckpointStore(str(tmp_path), read_only=True)
  try:
    assert store.saved_fields(1) == PLAIN_FIELDS
    assert store.model_params_field(1) == checkpoints.PARAMS_FIELD
    assert store.model_params_field(2) == checkpoints.EMA_PARAMS_FIELD
    abstract = checkpoints.abstract_like(trained)
    np.testing.assert_array_equal(
        store.restore_params(2, abstract, field=store.model_params_field(2))["w"], 0.5)
    np.testing.assert_array_equal(store.restore_params(2, abstract)["w"], 1.0)
  finally:
    store.close()


# ---------------------------------------------------------------------------
# Faults: truncated files, a workdir that cannot be written, a full disk.


def test_truncated_checkpoint_json_is_refused_naming_the_file(tiny_run_copy, data_dir, capsys):
  trained = tiny_run_copy
  metadata = trained / "checkpoints" / str(STEPS) / "extra" / "metadata"
  metadata.write_text(metadata.read_text()[:40])
  assert cli.run("train", tiny_config(data_dir), str(trained)) == 2
  error = one_error_line(capsys.readouterr().err)
  assert f"cannot read {trained / 'checkpoints' / str(STEPS) / 'extra'}" in error


def test_truncated_checkpoint_arrays_are_one_error_line_through_main(tiny_run_copy, data_dir):
  trained = tiny_run_copy
  for path in glob.glob(str(trained / "checkpoints" / str(STEPS) / "state" / "**" / "d" / "*"),
                        recursive=True):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  result = run_main("--config", "configs/tiny.py", "--workdir", trained,
                    *[f"--config.{name}={value}" for name, value in OVERRIDES.items()],
                    f"--config.data_dir={data_dir}")
  assert result.returncode == 2, result.stderr[-3000:]
  error = one_error_line(result.stderr)
  assert f"cannot restore checkpoint {trained / 'checkpoints' / str(STEPS)}" in error
  others = [step for step in complete_steps(trained) if step != STEPS]
  assert others, complete_steps(trained)
  assert f"other checkpoints here: steps {others}" in error, error


def test_workdir_that_cannot_be_created_is_refused_before_anything_runs(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  fresh = tmp_path / "inputs"
  fresh.mkdir()
  workdir = blocker / "run"
  assert cli.run("train", tiny_config(fresh), str(workdir)) == 2
  error = one_error_line(capsys.readouterr().err)
  assert error.startswith(f"error: cannot write to {workdir}: ")
  assert "Not a directory" in error
  assert not os.listdir(fresh)  # no data generated


def write_error(directory):
  """The OSError of creating a file in `directory`, or None if that works."""
  probe = directory / "probe"
  try:
    probe.write_text("")
  except OSError as error:
    return error
  probe.unlink()
  return None


@pytest.fixture
def read_only_folder(tmp_path):
  """An empty folder this user cannot write to, root included.

  Permission bits stop other users; root ignores them, so for root the
  folder is made immutable (`chattr +i`, which root's writes obey too). The
  test skips only where neither works (a filesystem without the attribute).
  """
  folder = tmp_path / "read_only"
  folder.mkdir()
  folder.chmod(0o500)
  immutable = False
  try:
    if write_error(folder) is None:
      immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                                 check=False).returncode == 0
      if write_error(folder) is None:
        pytest.skip(f"cannot make a folder read-only for this user here (chattr +i "
                    f"{'had no effect' if immutable else 'failed'} on {folder})")
    yield folder, write_error(folder)
  finally:
    if immutable:
      subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o700)


def test_read_only_workdir_is_refused(read_only_folder, tmp_path, capsys):
  workdir, error = read_only_folder
  assert error.errno in (errno.EACCES, errno.EPERM)  # permission bits; immutable for root
  assert cli.run("train", tiny_config(tmp_path / "inputs"), str(workdir)) == 2
  assert one_error_line(capsys.readouterr().err).startswith(
      f"error: cannot write to {workdir}: [Errno {error.errno}] {os.strerror(error.errno)}")
  assert os.listdir(workdir) == []
  assert not os.path.exists(tmp_path / "inputs")  # refused before any data was made


@pytest.mark.slow  # trains
def test_disk_full_while_saving_is_a_clear_error_and_the_last_checkpoint_restores(
    tmp_path, data_dir, monkeypatch, capsys):
  save_json = ocp.JsonCheckpointHandler._save_fn

  async def disk_full_at_step_12(self, item, directory):
    if directory.parent.name == f"12{TMP_SUFFIX}":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
    return await save_json(self, item, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", disk_full_at_step_12)
  workdir = tmp_path / "run"
  assert cli.run("train", tiny_config(data_dir), str(workdir)) == 2
  error = one_error_line(capsys.readouterr().err)
  directory = workdir / "checkpoints"
  assert error.startswith(f"error: could not save checkpoint {directory / '12'}: "
                          "[Errno 28] No space left on device")
  assert f"the last complete checkpoint, {directory / '6'}, is kept and restorable" in error
  assert complete_steps(workdir) == [6]
  monkeypatch.undo()

  restored = inference.restore_for_inference(tiny_config(data_dir), str(workdir))
  assert restored.step == 6
  assert_finite(restored.params)
  # A writable store (as the next run opens) clears the half-written step,
  # in the background.
  assert leftover_tmp_dirs(workdir) == [f"12{TMP_SUFFIX}"]
  store = checkpoints.CheckpointStore(str(directory))
  assert store.latest_step() == 6
  deadline = time.monotonic() + PATIENCE_S
  while leftover_tmp_dirs(workdir) and time.monotonic() < deadline:
    time.sleep(0.01)
  store.close()
  assert leftover_tmp_dirs(workdir) == []


# ---------------------------------------------------------------------------
# A sound checkpoint reads in silence; a damaged one in one line.


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy(tiny_run, tmp_path):
  shutil.copytree(tiny_run.workdir, tmp_path / "run")
  return tmp_path / "run"


def _config(tiny_run, **fields):
  return config_files.tiny(tiny_run.data_dir, generated_size=2000, max_epochs=1, **fields)


def _main(tiny_run, workdir, *flags):
  return forked_python.run(
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


def test_asyncio_reports_of_reads_a_failed_restore_abandoned_are_dropped_and_others_kept(caplog):
  # What asyncio's own handler logs when such a read task is collected: the
  # message, then the task on the next line.
  checkpoints._quiet_abandoned_reads()  # pylint: disable=protected-access
  loop = asyncio.new_event_loop()
  try:
    with caplog.at_level(logging.ERROR, logger="asyncio"):
      loop.call_exception_handler({"message": "Task exception was never retrieved",
                                   "exception": ValueError("OUT_OF_RANGE: Error reading"),
                                   "future": "<Task finished name='Task-278'>"})
      loop.call_exception_handler({"message": "Unclosed client session"})
  finally:
    loop.close()
  assert [record.getMessage() for record in caplog.records] == ["Unclosed client session"]
