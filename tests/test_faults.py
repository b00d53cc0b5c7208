"""Faults: kill -9, SIGTERM and Ctrl-C, non-finite losses, another model, data and configs.

Every training run here is the tiny config for one epoch of the session's
data folder (conftest.py): 23 steps, checkpoints at steps 6, 12, 18 and 23
(tests/fault_runs.py). A run that must end as if never interrupted is
compared with the session's tiny run, which ends in the same state (its
validations and logs, at other steps, change nothing in training).
Subprocesses run the real main.py and share the persistent compilation
cache conftest.py sets. Faults of checkpoint files and of the workdir are
tested in test_checkpoints.py and test_workdir.py.
"""

import concurrent.futures
import itertools
import os
import re
import signal
import sys
import time

import jax
import numpy as np
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax import checkpoints, cli, config_checks, data, inference
from polyflax import events, training_streams
from polyflax import train
from fault_runs import (PATIENCE_S, OVERRIDES, REPO, STEPS, TMP_SUFFIX, assert_finite,
                        checkpoint_entries, complete_steps, leftover_tmp_dirs, one_error_line,
                        run_main, saved, tiny_config)


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
      self.process = forked_python.Popen(command, cwd=REPO, stdout=out, stderr=err,
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


def assert_same_state(workdir_a, workdir_b):
  step_a, step_b = complete_steps(workdir_a)[-1], complete_steps(workdir_b)[-1]
  assert step_a == step_b == STEPS
  leaves_a = jax.tree.leaves(saved(workdir_a, step_a)[0])
  leaves_b = jax.tree.leaves(saved(workdir_b, step_b)[0])
  assert len(leaves_a) == len(leaves_b) > 10
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(a, b)


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


# --- 1 and 2. kill -9, SIGTERM and Ctrl-C -----------------------------------------
#
# Three scenarios, each driving main.py subprocesses of its own, run side by
# side (a subprocess mostly imports jax and compiles, on one core); each
# returns the workdir it leaves, and its test checks the outcome.


def killed_twice_then_resumed(tmp_path, data_dir):
  """kill -9 while starting, then while saving step 12; then the same command again."""
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
  return workdir


def stopped_by_sigterm_and_ctrl_c_then_resumed(tmp_path, data_dir):
  """SIGTERM once a checkpoint is being written, Ctrl-C after the resume; then to the end."""
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
  return workdir


def ctrl_c_during_a_held_step(tmp_path, data_dir):
  """Ctrl-C while step 8 is held in flight; it is let go after the signal."""
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
  return workdir


INTERRUPTIONS = (killed_twice_then_resumed, stopped_by_sigterm_and_ctrl_c_then_resumed,
                 ctrl_c_during_a_held_step)


@pytest.fixture(scope="module")
def interrupted(data_dir, tmp_path_factory):
  """{scenario: future of the workdir it leaves} of INTERRUPTIONS, all started at once."""
  with concurrent.futures.ThreadPoolExecutor(len(INTERRUPTIONS)) as pool:
    yield {scenario: pool.submit(scenario, tmp_path_factory.mktemp(scenario.__name__), data_dir)
           for scenario in INTERRUPTIONS}


@pytest.mark.slow  # trains in subprocesses
def test_killed_runs_resume_from_the_last_complete_checkpoint(interrupted, tiny_run):
  workdir = interrupted[killed_twice_then_resumed].result()
  assert_same_state(workdir, tiny_run.workdir)  # as if never killed


@pytest.mark.slow  # trains in subprocesses
def test_sigterm_and_ctrl_c_save_the_current_step_and_resume_exactly(interrupted, tiny_run):
  workdir = interrupted[stopped_by_sigterm_and_ctrl_c_then_resumed].result()
  assert_same_state(workdir, tiny_run.workdir)  # as if never stopped


@pytest.mark.slow  # trains in subprocesses
def test_ctrl_c_during_a_slow_step_is_answered_at_once_and_stops_within_two_steps(interrupted):
  interrupted[ctrl_c_during_a_held_step].result()


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


# --- 4. A checkpoint of another model ------------------------------------------------


def test_checkpoint_of_another_model_shape_is_refused_with_what_differs(tiny_run_copy, data_dir,
                                                                         capsys):
  trained = tiny_run_copy
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


def train_on_a_binary_file(tmp_path):
  """(data folder, main.py's result) of training on a binary train.txt."""
  bad_dir = tmp_path / "inputs"
  bad_dir.mkdir()
  (bad_dir / "train.txt").write_bytes(b"\x00\x01garbage")
  return bad_dir, run_main("--config", "configs/tiny.py", "--workdir", tmp_path / "run",
                           f"--config.data_dir={bad_dir}")


def test_bad_training_file_through_main_is_one_error_line(background_runs):
  bad_dir, result = background_runs["binary training file"].result()
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


def train_on_three_devices(tmp_path):
  """(folder, main.py's result) of training batches of 64 on 3 devices."""
  return tmp_path, run_main("--config", "configs/tiny.py", "--workdir", tmp_path / "run",
                            f"--config.data_dir={tmp_path / 'inputs'}", "--config.batch_size=64",
                            env={"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {"binary training file": train_on_a_binary_file,
                   "3 devices": train_on_three_devices}


def test_batch_that_does_not_divide_over_the_devices_is_refused(tmp_path, background_runs):
  with pytest.raises(config_checks.ConfigError, match="use a multiple of 3"):
    config_checks.check_config(tiny_config(tmp_path, batch_size=64), num_devices=3)
  config_checks.check_config(tiny_config(tmp_path, batch_size=66), num_devices=3)
  tmp_path, result = background_runs["3 devices"].result()
  assert result.returncode == 2, result.stderr[-3000:]
  assert "batch_size=64 does not divide over 3 devices: use a multiple of 3" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "inputs")


@pytest.mark.parametrize("field", ["generated_cancel_fraction", "generated_near_cancel_fraction",
                                   "generated_edge_fraction"])
def test_the_row_mix_is_checked_and_refused_for_the_split(tmp_path, field):
  for bad in (-0.5, 1.0):
    with pytest.raises(config_checks.ConfigError, match=rf"{field} must be in \[0, 1\)"):
      config_checks.check_config(tiny_config(tmp_path, train_data="generated", **{field: bad}))
  with pytest.raises(config_checks.ConfigError, match="applies to train_data='generated' only"):
    config_checks.check_config(tiny_config(tmp_path, train_data="split", **{field: 0.1}))
  config_checks.check_config(tiny_config(tmp_path, train_data="generated", **{field: 0.1}))
  config_checks.check_config(tiny_config(tmp_path, train_data="split"))


def test_the_row_mix_must_leave_some_of_the_datas_own_rows(tmp_path):
  with pytest.raises(config_checks.ConfigError, match="must sum below 1"):
    config_checks.check_config(tiny_config(
        tmp_path, train_data="generated", generated_cancel_fraction=0.4,
        generated_near_cancel_fraction=0.3, generated_edge_fraction=0.3))
