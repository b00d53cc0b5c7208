"""Faults: kill -9, SIGTERM and Ctrl-C, non-finite losses, bad checkpoints, data, configs, workdirs.

Every training run here is the tiny config for one epoch of the same small
data dir: 23 steps, checkpoints at steps 6, 12, 18 and 23. Subprocesses run
the real main.py and share the persistent compilation cache conftest.py sets.
"""

import errno
import glob
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from checkpoint_files import read_arrays

from polyflax import checkpoints, cli, config_checks, config_files, data, inference
from polyflax import events, training_streams
from polyflax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 23  # 1,520 training examples in batches of 64, one epoch
OVERRIDES = {"generated_size": 2000, "max_epochs": 1, "val_check_interval": 0.25,
             "val_exact_match_examples": 0, "log_every_steps": 3}
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# A hang fails the test after this long (never a timing assertion).
PATIENCE_S = 600


def tiny_config(data_dir, **overrides):
  return config_files.tiny(data_dir, **dict(OVERRIDES, **overrides))


def main_command(workdir, data_dir, *flags, held_step=None):
  """main.py on the tiny config; with `held_step`, that step's save never commits."""
  if held_step is None:
    program = [os.path.join(REPO, "main.py")]
  else:
    program = [os.path.join(REPO, "tests", "hold_save_main.py"), str(held_step)]
  return ([sys.executable, *program, "--config", "configs/tiny.py", "--workdir", str(workdir),
           f"--config.data_dir={data_dir}"]
          + [f"--config.{name}={value}" for name, value in OVERRIDES.items()] + list(flags))


class Run:
  """A main.py subprocess writing its output to files."""

  def __init__(self, command, log_dir, env=None):
    os.makedirs(log_dir, exist_ok=True)
    self._out = os.path.join(log_dir, "stdout.txt")
    self._err = os.path.join(log_dir, "stderr.txt")
    with open(self._out, "w") as out, open(self._err, "w") as err:
      self.process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err,
                                      env=None if env is None else dict(os.environ, **env))

  def stdout(self):
    with open(self._out) as f:
      return f.read()

  def stderr(self):
    with open(self._err) as f:
      return f.read()

  def wait_until(self, condition, what):
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
      if self.process.poll() is not None:
        pytest.fail(f"main.py exited with {self.process.returncode} before {what}:\n"
                    f"{self.stdout()[-2000:]}\n{self.stderr()[-3000:]}")
      if time.monotonic() > deadline:
        self.process.kill()
        pytest.fail(f"no {what} after {PATIENCE_S} s")
      time.sleep(0.005)

  def finish(self):
    try:
      return self.process.wait(PATIENCE_S)
    finally:
      if self.process.poll() is None:
        self.process.kill()


def run_main(*args, env=None):
  return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *map(str, args)],
                        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE_S,
                        env=None if env is None else dict(os.environ, **env))


def checkpoint_entries(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return os.listdir(directory) if os.path.isdir(directory) else []


def complete_steps(workdir):
  return sorted(int(name) for name in checkpoint_entries(workdir) if name.isdigit())


def leftover_tmp_dirs(workdir):
  return [name for name in checkpoint_entries(workdir) if TMP_SUFFIX in name]


def saved(workdir, step):
  """(state, extra) of a checkpoint, read straight from its files."""
  directory = os.path.join(workdir, "checkpoints", str(step))
  state = read_arrays(os.path.join(directory, "state"))
  with open(os.path.join(directory, "extra", "metadata"), encoding="utf-8") as f:
    return state, json.load(f)


def assert_same_state(workdir_a, workdir_b):
  step_a, step_b = complete_steps(workdir_a)[-1], complete_steps(workdir_b)[-1]
  assert step_a == step_b == STEPS
  leaves_a = jax.tree.leaves(saved(workdir_a, step_a)[0])
  leaves_b = jax.tree.leaves(saved(workdir_b, step_b)[0])
  assert len(leaves_a) == len(leaves_b) > 10
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(a, b)


def assert_finite(tree):
  for leaf in jax.tree.leaves(tree):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.floating):
      assert np.isfinite(leaf).all()


def read_scalars(workdir):
  """{tag: [(step, value)]} of a run's only event file."""
  assert len(events.event_files(workdir)) == 1
  return events.read_scalars(workdir)


def purge_steps(workdir):
  """Steps from which each event file tells TensorBoard to drop earlier files' events."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  return sorted(event.step for path in events.event_files(workdir)
                for event in events.read_events(path)
                if event.session_log.status == event_pb2.SessionLog.START)


def one_error_line(stderr):
  """The `error: ...` line a user error prints, checking it is the only thing said."""
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert lines and lines[-1].startswith("error: "), stderr[-3000:]
  return lines[-1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("inputs")
  data.ensure_splits(path, 0, generated_size=OVERRIDES["generated_size"])
  return path


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """The workdir of an uninterrupted run (never modified by tests: copy it)."""
  workdir = tmp_path_factory.mktemp("reference")
  train.train_and_evaluate(tiny_config(data_dir), str(workdir))
  assert complete_steps(workdir)[-1] == STEPS
  return workdir


@pytest.fixture
def trained(tmp_path, reference):
  """A copy of the reference workdir to damage."""
  workdir = tmp_path / "trained"
  shutil.copytree(reference, workdir)
  return workdir


# --- 1. kill -9 ---------------------------------------------------------------


@pytest.mark.slow  # trains in subprocesses
def test_killed_runs_resume_from_the_last_complete_checkpoint(tmp_path, data_dir, reference):
  workdir = tmp_path / "run"
  # Killed while starting (compiling), before any checkpoint.
  run = Run(main_command(workdir, data_dir), tmp_path / "startup")
  run.wait_until(lambda: os.path.isdir(workdir / "checkpoints"), "checkpoint folder")
  run.process.kill()
  run.finish()
  assert complete_steps(workdir) == []

  # Killed while step 12 is being saved, after step 6 is complete.
  run = Run(main_command(workdir, data_dir, held_step=12), tmp_path / "during_save")
  run.wait_until(lambda: (workdir / "checkpoints" / f"12{TMP_SUFFIX}").exists(), "save of step 12")
  run.process.kill()
  assert run.finish() == -signal.SIGKILL
  assert complete_steps(workdir) == [6]
  assert leftover_tmp_dirs(workdir) == [f"12{TMP_SUFFIX}"]

  # The same command again resumes from step 6 and ends as if never killed.
  run = Run(main_command(workdir, data_dir), tmp_path / "rerun")
  assert run.finish() == 0, run.stderr()[-3000:]
  assert "resuming from checkpoint at step 6" in run.stdout()
  assert leftover_tmp_dirs(workdir) == []
  assert purge_steps(workdir) == [7]  # TensorBoard hides the killed run's steps 7..
  assert_same_state(workdir, reference)


# --- 2. SIGTERM and Ctrl-C ------------------------------------------------------


@pytest.mark.slow  # trains in subprocesses
def test_sigterm_and_ctrl_c_save_the_current_step_and_resume_exactly(tmp_path, data_dir,
                                                                       reference):
  workdir = tmp_path / "run"
  stopped_at = 0
  for signum in (signal.SIGTERM, signal.SIGINT):
    name = signal.Signals(signum).name
    run = Run(main_command(workdir, data_dir), tmp_path / name)
    # Once a checkpoint past the last stop is being written, the loop is running.
    newer = lambda after=stopped_at: any(
        int(re.match(r"\d+", entry).group()) > after
        for entry in checkpoint_entries(workdir) if entry[:1].isdigit())
    run.wait_until(newer, f"checkpoint after step {stopped_at}")
    run.process.send_signal(signum)
    assert run.finish() == 128 + signum, run.stderr()[-3000:]
    if stopped_at:
      assert f"resuming from checkpoint at step {stopped_at}" in run.stdout()
    said = re.search(rf"received {name}: saved a checkpoint at step (\d+)", run.stdout())
    assert said, run.stdout()[-2000:]
    step = int(said.group(1))
    assert stopped_at < step < STEPS
    assert complete_steps(workdir)[-1] == step
    state, extra = saved(workdir, step)
    assert int(state["step"]) == step
    assert extra["iterator"] == {"seed": 0, "epoch": 0, "position": step}
    stopped_at = step

  run = Run(main_command(workdir, data_dir), tmp_path / "rerun")
  assert run.finish() == 0, run.stderr()[-3000:]
  assert f"resuming from checkpoint at step {stopped_at}" in run.stdout()
  assert_same_state(workdir, reference)


@pytest.mark.slow  # trains in subprocesses
def test_ctrl_c_during_a_slow_step_is_answered_at_once_and_stops_within_two_steps(
    tmp_path, data_dir):
  held = 8  # step 8 runs until the test lets it go, after sending SIGINT
  gate = tmp_path / "gate"
  gate.mkdir()
  workdir = tmp_path / "run"
  command = main_command(workdir, data_dir, "--config.log_every_steps=100",
                         "--config.val_check_interval=1.0")
  command[1:2] = [os.path.join(REPO, "tests", "held_step_main.py"), str(held), str(gate)]
  run = Run(command, tmp_path / "logs")
  # No log or validation before the epoch's end (step 23): nothing but the
  # bound on steps in flight keeps the loop from running ahead of step 8.
  run.wait_until(lambda: (gate / "started").exists(), f"step {held} in flight")
  run.process.send_signal(signal.SIGINT)
  (gate / "go").touch()
  assert run.finish() == 130, run.stderr()[-3000:]
  lines = run.stdout().splitlines()
  said = [index for index, line in enumerate(lines) if line.startswith("received SIGINT")]
  assert len(said) == 2, lines
  promise, done = lines[said[0]], lines[said[1]]
  # One line at once, saying the step it stops after, then the save.
  promised = re.fullmatch(r"received SIGINT: stopping after step (\d+), then saving a checkpoint",
                          promise)
  assert promised, promise
  step = int(promised.group(1))
  assert held <= step <= held + 2
  assert done.startswith(f"received SIGINT: saved a checkpoint at step {step} in "), done
  assert complete_steps(workdir) == [step]
  state, extra = saved(workdir, step)
  assert int(state["step"]) == step
  assert extra["iterator"] == {"seed": 0, "epoch": 0, "position": step}


# --- 3. Non-finite losses ---------------------------------------------------------


def poison_batch(monkeypatch, number):
  """Puts a token id outside the vocabulary into the `number`-th training batch.

  The embedding lookup of such an id is NaN (jnp.take fills out-of-range
  rows), so that step's loss and gradients are NaN for real.
  """
  next_batch = training_streams.TrainIterator.__next__
  served = itertools.count(1)

  def poisoned(self):
    batch = next_batch(self)
    if next(served) == number:
      batch = dict(batch, inputs=batch["inputs"].copy())
      batch["inputs"][0, 0] = 1_000_000
    return batch

  monkeypatch.setattr(training_streams.TrainIterator, "__next__", poisoned)


@pytest.mark.slow  # trains
def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, data_dir, monkeypatch, capsys):
  poison_batch(monkeypatch, 8)
  workdir = tmp_path / "run"
  assert cli.run("train", tiny_config(data_dir), str(workdir)) == 1
  error = one_error_line(capsys.readouterr().err)
  assert "the training loss was not finite at step 8" in error
  assert f"last good checkpoint, {workdir / 'checkpoints' / '6'}, is kept" in error
  assert "skip_nonfinite_steps" in error
  assert complete_steps(workdir) == [6]
  state, _ = saved(workdir, 6)
  assert_finite(state)


@pytest.mark.slow  # trains
def test_skip_nonfinite_steps_skips_the_step_and_counts_it(tmp_path, data_dir, monkeypatch):
  poison_batch(monkeypatch, 4)
  workdir = tmp_path / "run"
  train.train_and_evaluate(tiny_config(data_dir, skip_nonfinite_steps=True), str(workdir),
                           stop_at_step=6)
  scalars = read_scalars(workdir)
  assert scalars["train/skipped_steps"] == [(3, 0.0), (6, 1.0)]
  assert all(np.isfinite(value) for _, value in scalars["train/loss"])
  state, extra = saved(workdir, 6)
  assert extra["skipped_steps"] == 1
  assert int(state["step"]) == 6
  assert_finite(state)


# --- 4. Checkpoints ------------------------------------------------------------------


def test_checkpoint_of_another_model_shape_is_refused_with_what_differs(trained, data_dir,
                                                                         capsys):
  other = tiny_config(data_dir, **{"model.hidden_dim": 48})
  assert cli.run("train", other, str(trained)) == 2
  error = one_error_line(capsys.readouterr().err)
  latest = trained / "checkpoints" / str(STEPS)
  assert f"checkpoint {latest} was written for a different model" in error
  assert "hidden_dim: checkpoint 32, config 48" in error
  # Inference takes the shape from the run's config.json; without it, the
  # fingerprint in the checkpoint still catches the mismatch.
  os.remove(trained / "config.json")
  with pytest.raises(checkpoints.CheckpointError, match="hidden_dim: checkpoint 32, config 48"):
    inference.restore_for_inference(other, str(trained))


def test_mismatched_or_unreadable_vocabulary_is_refused(trained, data_dir, capsys):
  path = trained / "vocab.json"
  tokens = json.loads(path.read_text())
  tokens[14], tokens[15] = tokens[15], tokens[14]
  path.write_text(json.dumps(tokens))
  for mode in ("train", "evaluate"):
    assert cli.run(mode, tiny_config(data_dir), str(trained)) == 2
    error = one_error_line(capsys.readouterr().err)
    assert f"vocabulary {path} does not match" in error
    assert "id 14 is 'c' there and 'a' here" in error
  path.write_text('["<pad>", "<bos>"')
  assert cli.run("train", tiny_config(data_dir), str(trained)) == 2
  assert f"cannot read the vocabulary {path}" in one_error_line(capsys.readouterr().err)


def test_unreadable_run_config_is_refused_naming_the_file(trained, data_dir, capsys):
  (trained / "config.json").write_text('{"model": {"hidden_dim": 3')
  assert cli.run("evaluate", tiny_config(data_dir), str(trained)) == 2
  error = one_error_line(capsys.readouterr().err)
  assert error.startswith(f"error: cannot read the run's config {trained / 'config.json'}: ")


def test_truncated_checkpoint_json_is_refused_naming_the_file(trained, data_dir, capsys):
  metadata = trained / "checkpoints" / str(STEPS) / "extra" / "metadata"
  metadata.write_text(metadata.read_text()[:40])
  assert cli.run("train", tiny_config(data_dir), str(trained)) == 2
  error = one_error_line(capsys.readouterr().err)
  assert f"cannot read {trained / 'checkpoints' / str(STEPS) / 'extra'}" in error


def test_truncated_checkpoint_arrays_are_one_error_line_through_main(trained, data_dir):
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
  assert re.search(r"other checkpoints here: steps \[[\d, ]*12, 18\]", error), error


# --- 5. Data files -------------------------------------------------------------------

BAD_DATA = {
    "empty": (b"", 1, "empty file"),
    "only_blank_lines": (b"\n\r\n\n", 1, "empty file"),
    "binary": (bytes(range(256)) * 8, 1, "binary data (NUL byte), not a text file"),
    "not_utf8": (b"(x+1)*(x+2)=x**2+3*x+2\n\xff\xfe(x+1)\n", 2, "not UTF-8 text"),
    "over_long": (b"(x+1)*(x+2)=x**2+3*x+2\n(" + b"1" * 100_000 + b"+x)*(x+2)=x**2\n", 2,
                  "factored side is 100010 characters long (at most 29)"),
    "unknown_token": (b"(x+1)*(x+2)=x**2+3*x+2\n(x+1)*(x+2)=x^2+3*x+2\n", 2,
                      "unknown token '^'"),
    "blank_line_inside": (b"(x+1)*(x+2)=x**2+3*x+2\n\n(x+1)*(x+2)=x**2+3*x+2\n", 2,
                          "blank line"),
}


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_bad_training_file_is_refused_with_file_line_and_reason(tmp_path, name, capsys):
  content, line, reason = BAD_DATA[name]
  bad_dir = tmp_path / "inputs"
  bad_dir.mkdir()
  (bad_dir / "train.txt").write_bytes(content)
  assert cli.run("train", tiny_config(bad_dir), str(tmp_path / "run")) == 2
  error = one_error_line(capsys.readouterr().err)
  assert error.startswith(f"error: {bad_dir / 'train.txt'}:{line}: {reason}")
  assert complete_steps(tmp_path / "run") == []


def test_bad_training_file_through_main_is_one_error_line(tmp_path):
  bad_dir = tmp_path / "inputs"
  bad_dir.mkdir()
  (bad_dir / "train.txt").write_bytes(b"\x00\x01garbage")
  result = run_main("--config", "configs/tiny.py", "--workdir", tmp_path / "run",
                    f"--config.data_dir={bad_dir}")
  assert result.returncode == 2
  assert one_error_line(result.stderr) == (
      f"error: {bad_dir / 'train.txt'}:1: binary data (NUL byte), not a text file")


def test_training_file_smaller_than_a_batch_is_refused(tmp_path, data_dir, capsys):
  with open(data_dir / "dataset.txt", encoding="utf-8") as f:
    lines = list(itertools.islice(f, 60))
  small = tmp_path / "inputs"
  small.mkdir()
  (small / "train.txt").write_text("".join(lines), encoding="utf-8")
  assert cli.run("train", tiny_config(small), str(tmp_path / "run")) == 2
  error = one_error_line(capsys.readouterr().err)
  assert error.startswith(f"error: {small / 'train_set.txt'}: no full batch to serve")
  assert "lower batch_size" in error


def test_byte_order_mark_crlf_and_trailing_blank_lines_are_accepted(tmp_path, data_dir):
  with open(data_dir / "dataset.txt", encoding="utf-8") as f:
    lines = [line.rstrip("\n") for line in itertools.islice(f, 300)]
  source = tmp_path / "inputs"
  source.mkdir()
  (source / "train.txt").write_bytes(
      b"\xef\xbb\xbf" + "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n\r\n\n")
  paths = data.ensure_splits(source, 0)
  split_lines = []
  for split in ("train", "val", "test"):
    split_lines += paths[split].read_text(encoding="utf-8").splitlines()
  assert sorted(split_lines) == sorted(lines)


# --- 6. Configs ----------------------------------------------------------------------


def test_invalid_configs_are_refused_before_anything_runs(tmp_path, capsys):
  fresh = tmp_path / "inputs"
  fresh.mkdir()
  config = tiny_config(fresh, **{"model.hidden_dim": 30, "batch_size": 0, "eval.beam_size": -1})
  for mode in ("train", "evaluate", "predict"):
    assert cli.run(mode, config, str(tmp_path / "run"), expr="(x+1)*(x+2)") == 2
    error = capsys.readouterr().err
    assert error.startswith("error: invalid config:"), error
    assert "model.hidden_dim=30 is not divisible by model.num_heads=4" in error
    assert "batch_size must be a positive integer (got 0)" in error
    assert "eval.beam_size must be a positive integer (got -1)" in error
  assert not os.path.exists(tmp_path / "run")
  assert not os.listdir(fresh)  # no data generated


def test_training_data_batching_and_step_fields_are_checked(tmp_path):
  config = tiny_config(tmp_path, train_data="fresh", constant_per_batch="bytes", max_steps=-1,
                       generated_examples_per_epoch=-5, digit_order="backwards")
  with pytest.raises(config_checks.ConfigError) as raised:
    config_checks.check_config(config)
  message = str(raised.value)
  assert "train_data must be 'split' or 'generated' (got 'fresh')" in message
  assert "constant_per_batch must be 'tokens' or 'examples' (got 'bytes')" in message
  assert "max_steps must be an integer >= 0 (got -1)" in message
  assert "generated_examples_per_epoch must be an integer >= 0 (got -5)" in message
  assert "digit_order must be 'printed' or 'reversed' (got 'backwards')" in message


def test_batch_that_does_not_divide_over_the_devices_is_refused(tmp_path):
  with pytest.raises(config_checks.ConfigError, match="use a multiple of 3"):
    config_checks.check_config(tiny_config(tmp_path, batch_size=64), num_devices=3)
  config_checks.check_config(tiny_config(tmp_path, batch_size=66), num_devices=3)
  result = run_main("--config", "configs/tiny.py", "--workdir", tmp_path / "run",
                    f"--config.data_dir={tmp_path / 'inputs'}", "--config.batch_size=64",
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})
  assert result.returncode == 2, result.stderr[-3000:]
  assert "batch_size=64 does not divide over 3 devices: use a multiple of 3" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "inputs")


# --- 8. Workdirs ---------------------------------------------------------------------


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


def test_generated_cancel_fraction_is_checked_and_refused_for_the_split(tmp_path):
  for bad in (-0.5, 1.0):
    with pytest.raises(config_checks.ConfigError,
                       match=r"generated_cancel_fraction must be in \[0, 1\)"):
      config_checks.check_config(tiny_config(tmp_path, train_data="generated",
                                             generated_cancel_fraction=bad))
  with pytest.raises(config_checks.ConfigError, match="applies to train_data='generated' only"):
    config_checks.check_config(tiny_config(tmp_path, train_data="split",
                                           generated_cancel_fraction=0.1))
  config_checks.check_config(tiny_config(tmp_path, train_data="generated",
                                         generated_cancel_fraction=0.1))
  config_checks.check_config(tiny_config(tmp_path, train_data="split"))
