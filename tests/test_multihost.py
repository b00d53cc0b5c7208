"""Two processes of two CPU devices each train exactly like one process of four.

The processes join through JAX's distributed runtime on localhost (see
tests/multihost_run.py). Dropout is on, and its masks follow each example's
position in the global batch, so equal losses and parameters also show that
the two processes' slices make up the single process's global batches, in the
same order.
"""

import concurrent.futures
import filecmp
import glob
import json
import os

import numpy as np
import pytest

import multihost_run  # tests/ is on the path (tests have no __init__.py)
from configs import default
from polyflax import cli, config_checks, distributed
from checkpoint_files import read_arrays
from polyflax.events import read_scalars

# 600 generated lines: 456 training examples, 7 steps of 64 per epoch, 14
# steps in 2 epochs, validation (and a checkpoint) at steps 4, 8, 12 and 14.
COMMON = {
    "generated_size": 600,
    "max_epochs": 2,
    "log_every_steps": 1,
    "checkpoints_to_keep": 10,
    "eval_batch_size": 64,
    "val_exact_match_examples": 16,
    "eval.batch_size": 64,
    "eval.limit": 40,
}
FIRST = {"mode": "train", "stop_at_step": 7}  # saves a checkpoint at step 7 and stops
CONTINUE = {"mode": "train"}  # resumes from it
EVALUATE = {"mode": "evaluate"}


LAUNCH_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
              "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS", "OMPI_MCA_orte_hnp_uri",
              "OMPI_COMM_WORLD_SIZE")


@pytest.fixture
def clean_env(monkeypatch):
  for name in LAUNCH_ENV:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def settings(**fields):
  config = default.get_config()
  for name, value in fields.items():
    config.distributed[name] = value
  return config.distributed


def test_auto_joins_only_when_asked(clean_env):
  assert not distributed.requested(settings())
  assert distributed.requested(settings(coordinator_address="10.0.0.1:1234"))
  assert distributed.requested(settings(num_processes=2))
  assert not distributed.requested(settings(num_processes=2, enabled="false"))
  assert distributed.requested(settings(enabled="true"))
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  assert distributed.requested(settings())
  assert not distributed.requested(settings(enabled="False"))


def test_auto_joins_a_slurm_step_of_several_tasks(clean_env):
  for name, value in (("SLURM_JOB_ID", "7"), ("SLURM_STEP_NODELIST", "node[1-2]"),
                      ("SLURM_NTASKS", "2"), ("SLURM_PROCID", "0"), ("SLURM_LOCALID", "0")):
    clean_env.setenv(name, value)
  assert not distributed.requested(settings())  # no srun step
  clean_env.setenv("SLURM_STEP_NUM_TASKS", "2")
  assert distributed.requested(settings())
  clean_env.setenv("SLURM_STEP_NUM_TASKS", "1")
  assert not distributed.requested(settings())


@pytest.mark.parametrize("fields, message", [
    ({"enabled": "maybe"}, "distributed.enabled must be"),
    ({"num_processes": 2, "process_id": 2}, "must be below distributed.num_processes=2"),
    ({"coordinator_address": "10.0.0.1"}, "must be host:port"),
    ({"num_processes": -1}, "distributed.num_processes must be"),
])
def test_invalid_settings_are_refused_before_anything_runs(tmp_path, capsys, clean_env, fields,
                                                           message):
  with pytest.raises(config_checks.ConfigError, match=message):
    distributed.requested(settings(**fields))
  config = default.get_config()
  config.distributed.update(fields)
  assert cli.run("train", config, str(tmp_path / "run")) == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "run")


def spec(root, name, phases):
  data_dir = str(root / f"{name}_inputs")
  return {"workdir": str(root / name), "out_dir": str(root / f"{name}_logs"), "phases": phases,
          "overrides": dict(COMMON, data_dir=data_dir,
                            **{"eval.test_file": os.path.join(data_dir, "test_set.txt")})}


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def scalars(workdir):
  """{tag: {step: value}} over the run's event files (one per training phase)."""
  return {tag: dict(values) for tag, values in read_scalars(workdir).items()}


def checkpoint_params(workdir, step):
  """The parameter arrays of a checkpoint, read as NumPy arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  restored = read_arrays(os.path.join(workdir, "checkpoints", str(step), "state"))
  return jax.tree.leaves(restored["params"])


def train_single_and_pairs(root):
  """One process of 4 devices and two of 2, each stopped at step 7, resumed, evaluated.

  Runs of their own, not the session's tiny run: what is compared is how
  processes joined through the distributed runtime train, save, resume and
  evaluate, which only runs started as several processes show.
  """
  single = spec(root, "single", [FIRST, CONTINUE, EVALUATE])
  first = spec(root, "multi", [FIRST])
  # A new pair of processes restores the checkpoint of step 7 and goes on.
  second = dict(spec(root, "multi", [CONTINUE, EVALUATE]), out_dir=str(root / "multi_logs_2"))
  # The single process runs beside the pairs: most of the time is compiling.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    single_run = pool.submit(multihost_run.launch, single, num_processes=1,
                             devices_per_process=4)
    first_out = multihost_run.launch(first, num_processes=2, devices_per_process=2)
    second_out = multihost_run.launch(second, num_processes=2, devices_per_process=2)
    single_out = single_run.result()
  return {"root": root, "single": single, "multi": first, "single_out": single_out,
          "first_out": first_out, "second_out": second_out}


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {"single and pairs": train_single_and_pairs}


@pytest.fixture(scope="module")
def runs(background_runs):
  """What `train_single_and_pairs` returned, once it is done."""
  return background_runs["single and pairs"].result()


def phase_records(out_dir, process_id):
  """(mode, latest checkpoint step or exit status) of each phase a process ran."""
  info = read_json(os.path.join(out_dir, f"process_{process_id}.json"))
  return [(phase["mode"], phase.get("latest_checkpoint", phase.get("status")))
          for phase in info["phases"]]


@pytest.mark.slow  # trains in subprocesses
def test_processes_and_devices(runs):
  infos = [read_json(os.path.join(runs["multi"]["out_dir"], f"process_{i}.json"))
           for i in (0, 1)]
  assert [info["process_index"] for info in infos] == [0, 1]
  for info in infos:
    assert (info["process_count"], info["device_count"], info["local_device_count"]) == (2, 4, 2)
  single = read_json(os.path.join(runs["single"]["out_dir"], "process_0.json"))
  assert (single["process_count"], single["device_count"]) == (1, 4)


@pytest.mark.slow  # trains in subprocesses
def test_every_process_ends_each_phase_where_one_process_does(runs):
  # Training stops at step 7, resumes to step 14 (the end); evaluation exits 0.
  single = phase_records(runs["single"]["out_dir"], 0)
  assert single == [("train", 7), ("train", 14), ("evaluate", 0)]
  second_logs = os.path.join(runs["root"], "multi_logs_2")
  for process_id in (0, 1):
    assert (phase_records(runs["multi"]["out_dir"], process_id)
            + phase_records(second_logs, process_id)) == single
  # Both processes of a pair return the same validation figures: those of
  # the whole validation split, gathered across processes.
  for out_dir in (runs["multi"]["out_dir"], second_logs):
    validations = [read_json(os.path.join(out_dir, f"process_{i}.json"))["phases"][0]["validation"]
                   for i in (0, 1)]
    assert validations[0] == validations[1]
    assert set(validations[0]) >= {"loss", "token_accuracy", "sequence_accuracy", "exact_match"}


@pytest.mark.slow  # trains in subprocesses
def test_same_data_losses_and_parameters_as_one_process(runs):
  for name in ("train_set.txt", "val_set.txt", "test_set.txt"):
    assert filecmp.cmp(runs["root"] / "single_inputs" / name,
                       runs["root"] / "multi_inputs" / name, shallow=False)
  single_dir, multi_dir = runs["single"]["workdir"], runs["multi"]["workdir"]
  single, multi = scalars(single_dir), scalars(multi_dir)
  assert sorted(multi["train/loss"]) == list(range(1, 15))
  for tag in ("train/loss", "train/grad_norm", "val/loss", "val/token_accuracy",
              "val/exact_match"):
    assert sorted(single[tag]) == sorted(multi[tag]), tag
    np.testing.assert_allclose([multi[tag][s] for s in sorted(multi[tag])],
                               [single[tag][s] for s in sorted(single[tag])],
                               rtol=1e-5, atol=1e-6, err_msg=tag)
  # Step 7 ends the first pair's run; step 14 the second pair's, after restoring step 7.
  for step in (7, 14):
    leaves_single = checkpoint_params(single_dir, step)
    leaves_multi = checkpoint_params(multi_dir, step)
    assert len(leaves_multi) == len(leaves_single) > 10
    for a, b in zip(leaves_multi, leaves_single):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)


@pytest.mark.slow  # trains in subprocesses
def test_only_process_zero_prints_and_writes_logs(runs):
  first_0, first_1 = runs["first_out"]
  second_0, second_1 = runs["second_out"]
  assert "parameters" in first_0 and "step 4 (epoch 0.57)" in first_0
  assert "stop_at_step=7: saved a checkpoint at step 7" in first_0
  assert "resuming from checkpoint at step 7" in second_0
  assert "Final Score" in second_0
  for output in (first_1, second_1):
    for text in ("parameters", "step 4 (epoch", "step 8 (epoch", "stop_at_step=7", "resuming",
                 "Final Score", "generating"):
      assert text not in output
  # One event file per training run, as with one process.
  multi_dir = runs["multi"]["workdir"]
  assert len(glob.glob(os.path.join(multi_dir, "events.out.tfevents.*"))) == 2
  assert os.path.exists(os.path.join(multi_dir, "config.json"))


@pytest.mark.slow  # trains in subprocesses
def test_evaluation_scores_every_test_row_once(runs):
  # The barely trained model's predictions vary little from row to row, so
  # the comparison of the gathered predictions with one process's is coarse.
  single_eval = os.path.join(runs["single"]["workdir"], "eval")
  multi_eval = os.path.join(runs["multi"]["workdir"], "eval")
  with open(os.path.join(multi_eval, "predictions.tsv"), encoding="utf-8") as f:
    rows = f.read().splitlines()[1:]
  with open(runs["root"] / "multi_inputs" / "test_set.txt", encoding="utf-8") as f:
    expected = [line.strip().replace("=", "\t") for line in f][:40]
  # Columns: input, target, prediction, correct, confidence.
  assert [row.split("\t")[:2] for row in rows] == [line.split("\t") for line in expected]
  with open(os.path.join(single_eval, "predictions.tsv"), encoding="utf-8") as f:
    single_rows = f.read().splitlines()
  # The same answers; their confidences agree to float32 rounding (other batch shapes).
  multi_rows = [row.split("\t") for row in rows]
  single_rows = [row.split("\t") for row in single_rows[1:]]
  assert [row[:4] for row in multi_rows] == [row[:4] for row in single_rows]
  assert [float(row[4]) for row in multi_rows] == pytest.approx(
      [float(row[4]) for row in single_rows], abs=1e-5)
  metrics = read_json(os.path.join(multi_eval, "metrics.json"))
  single_metrics = read_json(os.path.join(single_eval, "metrics.json"))
  assert metrics["num_examples"] == 40
  assert metrics["num_correct"] == single_metrics["num_correct"]
