"""Training end to end on the tiny config: data parallelism, resume, logs, checkpoints.

The runs train on the session's data folder (conftest.py).
"""

import glob
import json
import os
import re
import shlex
import sys

import numpy as np
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax
from checkpoint_files import read_arrays
from polyflax.events import latest_by_step, read_scalars

from polyflax import checkpoints, cli, config_files, inference, train
from polyflax import vocab as vocab_lib

# Every test here trains or decodes at length (see pytest.ini).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir, **overrides):
  return config_files.tiny(data_dir, **dict({"generated_size": 2000, "log_every_steps": 3},
                                            **overrides))


def latest_params(workdir):
  store = checkpoints.CheckpointStore(os.path.join(workdir, "checkpoints"), read_only=True)
  step = store.latest_step()
  restored = read_arrays(os.path.join(store.directory, str(step), "state"))
  store.close()
  return step, restored


def latest_record(workdir):
  store = checkpoints.CheckpointStore(os.path.join(workdir, "checkpoints"), read_only=True)
  try:
    return store.restore_record(store.latest_step())
  finally:
    store.close()


def assert_same_arrays(tree_a, tree_b):
  """Two checkpoints' pytrees hold the same arrays under the same structure."""
  import jax  # pylint: disable=g-import-not-at-top
  assert jax.tree.structure(tree_a) == jax.tree.structure(tree_b)
  leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
  assert len(leaves_a) == len(leaves_b) > 10
  for a, b in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(a, b)


def one_step_on_one_and_four_devices(folder):
  """{device count: the arrays multidevice_step.py saved}, its two processes run side by side.

  Each is a process of its own: XLA_FLAGS is read when jax is imported.
  """
  outs = {num_devices: folder / f"step_{num_devices}.npz" for num_devices in (1, 4)}
  processes = {num_devices: forked_python.Popen(
      [sys.executable, os.path.join(REPO, "tests", "multidevice_step.py"), str(num_devices),
       str(out)], cwd=REPO) for num_devices, out in outs.items()}
  try:
    for process in processes.values():
      assert process.wait(timeout=300) == 0
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
  return {num_devices: dict(np.load(out)) for num_devices, out in outs.items()}


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {"one step": one_step_on_one_and_four_devices}


def test_one_and_four_devices_give_the_same_step(background_runs):
  results = background_runs["one step"].result()
  one, four = results[1], results[4]
  np.testing.assert_allclose(one["loss"], four["loss"], rtol=1e-5)
  np.testing.assert_allclose(one["grad_norm"], four["grad_norm"], rtol=1e-4)
  assert one["token_count"] == four["token_count"]
  names = [name for name in one if name.startswith("param_")]
  assert len(names) > 10
  for name in names:
    np.testing.assert_allclose(one[name], four[name], atol=2e-6, rtol=1e-5)


def test_interrupted_then_resumed_run_ends_like_an_uninterrupted_one(tmp_path, data_dir, capsys):
  config = tiny_config(data_dir, max_epochs=2, val_check_interval=0.5)
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  stopped_at = 7
  capsys.readouterr()
  train.train_and_evaluate(config, str(tmp_path / "resumed"), stop_at_step=stopped_at)
  step, _ = latest_params(str(tmp_path / "resumed"))
  assert step == stopped_at
  # A run stopped early says where it stopped, and that no validation came yet.
  said = capsys.readouterr().out.splitlines()
  stopped = next(index for index, line in enumerate(said) if line.startswith("stop_at_step="))
  assert re.fullmatch(r"training stopped at step 7 of (\d+), epoch 0\.\d\d of 2\.00; no "
                      "validation yet", said[stopped + 1]), said[stopped + 1]
  assert said[stopped + 2] == (f"checkpoints: {tmp_path / 'resumed' / 'checkpoints'} "
                               "(evaluate, predict and export read step 7)")
  assert said[stopped + 3].startswith("evaluate: python main.py --config CONFIG --workdir ")
  assert not any(line.startswith("note:") for line in said)
  stop_record = latest_record(str(tmp_path / "resumed"))  # saved before the first validation
  assert stop_record.validation_history == [] and stop_record.train_seconds > 0
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed == straight
  step_a, params_a = latest_params(str(tmp_path / "straight"))
  step_b, params_b = latest_params(str(tmp_path / "resumed"))
  assert step_a == step_b > stopped_at
  assert_same_arrays(params_a, params_b)
  # The validation history goes on across the resume, its clock too.
  straight_history = latest_record(str(tmp_path / "straight")).validation_history
  resumed_record = latest_record(str(tmp_path / "resumed"))
  history = resumed_record.validation_history
  assert [entry["step"] for entry in history] == [entry["step"] for entry in straight_history]
  assert len(history) >= 3 and history[0]["step"] > stopped_at
  for entry, straight_entry in zip(history, straight_history):
    assert entry["exact_match"] == straight_entry["exact_match"] is not None
    assert entry["loss"] == straight_entry["loss"]
  seconds = [entry["train_seconds"] for entry in history]
  assert stop_record.train_seconds < seconds[0] and seconds == sorted(seconds)
  assert resumed_record.train_seconds == seconds[-1]
  logged = dict(latest_by_step(read_scalars(tmp_path / "resumed")["val/train_seconds"]))
  assert logged == pytest.approx({entry["step"]: entry["train_seconds"] for entry in history})
  script = forked_python.run([sys.executable, "scripts/time_to_accuracy.py", str(tmp_path / "resumed"),
                           "--thresholds", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert script.returncode == 0, script.stderr
  assert script.stdout.splitlines()[0].startswith(f"{tmp_path / 'resumed'} (event files): "
                                                  f"{len(history)} validations")
  assert script.stdout.splitlines()[1].endswith(
      f"({seconds[0]:.0f} s), {history[0]['examples']:,} examples, at step {history[0]['step']} "
      f"(exact match {history[0]['exact_match']:.4f})")
  # The training examples go on across the resume, as the uninterrupted run counted them.
  assert [entry["examples"] for entry in history] == [entry["examples"]
                                                      for entry in straight_history]
  assert resumed_record.train_examples == latest_record(str(tmp_path / "straight")).train_examples


def test_a_resumed_run_goes_on_counting_examples_and_validating_densely_where_it_left(
    tiny_run, tiny_run_copy):
  batch = tiny_run.config.batch_size  # every batch of the tiny config: one bucket, full rows
  record = latest_record(str(tiny_run.workdir))
  assert [(entry["step"], entry["examples"]) for entry in record.validation_history] == [
      (12, 12 * batch), (23, 23 * batch)]
  assert record.train_examples == 23 * batch
  # Resumed for a second epoch with early validations every 200 examples up to
  # 2,000, stopped once on the way: 1,600 examples are reached at step 25,
  # 1,800 at 29, 2,000 at 32, besides the step schedule's 24.
  config = config_files.set_fields(
      tiny_run.config.copy_and_resolve_references(),
      {"max_epochs": 2, "val_early_every_examples": 200, "val_early_until_examples": 2000})
  train.train_and_evaluate(config, str(tiny_run_copy), stop_at_step=27)
  assert latest_record(str(tiny_run_copy)).train_examples == 27 * batch
  train.train_and_evaluate(config, str(tiny_run_copy), stop_at_step=33)
  resumed = latest_record(str(tiny_run_copy))
  assert resumed.train_examples == 33 * batch
  steps = [entry["step"] for entry in resumed.validation_history]
  assert steps == [12, 23, 24, 25, 29, 32]
  assert [entry["examples"] for entry in resumed.validation_history] == [
      step * batch for step in steps]
  logged = dict(latest_by_step(read_scalars(tiny_run_copy)["val/train_examples"]))
  assert logged == {step: step * batch for step in steps}


def test_generated_stream_run_resumes_like_an_uninterrupted_one(tmp_path, data_dir, capsys):
  config = tiny_config(data_dir, max_epochs=2, val_check_interval=0.5, train_data="generated",
                       generated_examples_per_epoch=1200)
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  train.train_and_evaluate(config, str(tmp_path / "resumed"), stop_at_step=20)
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed == straight
  step_a, state_a = latest_params(str(tmp_path / "straight"))
  step_b, state_b = latest_params(str(tmp_path / "resumed"))
  assert step_a == step_b > 20
  assert_same_arrays(state_a, state_b)
  # A split run cannot resume a generated stream's checkpoint, nor the reverse.
  split = tiny_config(data_dir, max_epochs=3, val_check_interval=0.5)
  assert cli.run("train", split, str(tmp_path / "resumed")) == 2
  stderr = capsys.readouterr().err
  assert "Traceback" not in stderr
  error = stderr.strip().splitlines()[-1]
  assert error.startswith(f"error: checkpoint {tmp_path / 'resumed' / 'checkpoints' / str(step_b)} "
                          "does not fit this training data and config")
  assert error.endswith("use the data and seed it was trained with, or another --workdir")


def test_main_trains_logs_checkpoints_and_resumes(tiny_run_copy, data_dir):
  # The session's tiny run is this command's first run, made in-process by the
  # same function main.py calls (test_faults.py runs main.py to the end).
  workdir = tiny_run_copy
  command = [sys.executable, "main.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
             f"--config.data_dir={data_dir}", "--config.generated_size=2000",
             "--config.max_epochs=1"]
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  assert os.path.exists(workdir / "config.json") and os.path.exists(workdir / "vocab.json")
  steps = sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
  assert steps
  # Run again, main.py resumes the finished run and ends with its closing lines.
  second = forked_python.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "parameters" in second.stdout
  assert f"resuming from checkpoint at step {steps[-1]}" in second.stdout
  tags = set(read_scalars(workdir))
  for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "train/examples_per_second",
              "val/loss", "val/token_accuracy", "val/sequence_accuracy", "val/exact_match"):
    assert tag in tags, tags
  # It ends saying what it reached, where it is and what to run next, with the
  # config file and workdir it was given.
  closing = second.stdout.splitlines()[-6:]
  reached = re.fullmatch(r"training done: (\d+) steps, 1\.00 epochs; best validation exact "
                         r"match (\d\.\d{4}) at step (\d+) \((\d+) validations\)", closing[0])
  assert reached, second.stdout[-3000:]
  assert int(reached.group(1)) == steps[-1]
  history = latest_record(str(workdir)).validation_history
  best = max(history, key=lambda entry: (entry["exact_match"], -entry["loss"]))
  assert (float(reached.group(2)), int(reached.group(3)), int(reached.group(4))) == (
      pytest.approx(best["exact_match"], abs=5e-5), best["step"], len(history))
  store = checkpoints.CheckpointStore(str(workdir / "checkpoints"), read_only=True)
  best_step = store.best_step()
  store.close()
  assert closing[1] == (f"checkpoints: {workdir / 'checkpoints'} (evaluate, predict and export "
                        f"read step {best_step}, the best by validation loss)")
  command_line = f"python main.py --config configs/tiny.py --workdir {shlex.quote(str(workdir))}"
  assert closing[2:5] == [f"evaluate: {command_line} --mode=evaluate",
                          f"predict: {command_line} --mode=predict --expr \"(k-15)*(2*k+29)\"",
                          f"view: tensorboard --logdir {shlex.quote(str(workdir))}"]
  # A run of the tiny config learns next to nothing, and the last line says so.
  assert best["exact_match"] < 0.5
  assert closing[5].startswith("note: an exact match this low is expected of a run this short")
  # The command it prints evaluates the run.
  evaluate = shlex.split(closing[2].split(": ", 1)[1])
  evaluated = forked_python.run([sys.executable, *evaluate[1:], "--config.eval.limit=32"], cwd=REPO,
                             capture_output=True, text=True, timeout=600)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert f"(step {best_step})" in evaluated.stdout


def test_fast_dev_run_writes_nothing(tmp_path, data_dir):
  config = tiny_config(data_dir, fast_dev_run=True)
  metrics = train.train_and_evaluate(config, str(tmp_path / "dev"))
  assert np.isfinite(metrics["loss"])
  assert not os.path.exists(tmp_path / "dev")


def test_config_over_the_parameter_cap_is_refused(tmp_path, data_dir, capsys):
  config = tiny_config(data_dir, max_params=1000)
  assert cli.run("train", config, str(tmp_path / "big")) == 2
  assert "over the cap" in capsys.readouterr().err


def test_a_run_with_reversed_digits_records_them_and_resumes_only_with_them(tmp_path, data_dir,
                                                                             capsys):
  workdir = tmp_path / "reversed"
  config = tiny_config(data_dir, max_epochs=1, digit_order="reversed")
  train.train_and_evaluate(config, str(workdir), stop_at_step=5)
  saved = json.loads((workdir / "vocab.json").read_text())
  assert saved["digit_order"] == "reversed"
  assert cli.run("train", tiny_config(data_dir, max_epochs=1), str(workdir)) == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error == (f"error: {workdir} was trained with digit_order='reversed', the config says "
                   "'printed': resume with the run's setting, or use another --workdir")
  train.train_and_evaluate(config, str(workdir))  # resumes with its own setting
  # An export decodes with the run's digit order: predictions are printed text.
  export_dir = tmp_path / "exported"
  assert cli.run("export", config_files.set_fields(config, {"export.dir": str(export_dir)}),
                 str(workdir)) == 0
  assert json.loads((export_dir / "vocab.json").read_text())["digit_order"] == "reversed"
  restored = inference.restore_for_inference(config, str(export_dir))
  assert restored.vocab == vocab_lib.Vocab.default("reversed")
