"""The exported model folder, parameters-only inference, and the module boundaries around it."""

import ast
import itertools
import concurrent.futures
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax
from checkpoint_files import read_arrays

from polyflax import calibration, checkpoints, cli, config_files, evaluate, example_sources, export
from polyflax import inference, input_pipeline, sharding, train, training_streams
from polyflax import vocab as vocab_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Module boundaries.


def imported_modules(path):
  """The polyflax modules a source file imports (at any depth of the file)."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == "polyflax":
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("polyflax."):
      names.add(node.module.split(".")[1])
    elif isinstance(node, ast.Import):
      names.update(alias.name.split(".")[1] for alias in node.names
                   if alias.name.startswith("polyflax."))
  return names


# The modules only training imports.
TRAINING_MODULES = {"train", "experiment", "steps", "validation", "signals", "run_log",
                    "progress", "run_lock", "run_summary"}


@pytest.mark.parametrize("path", ["polyflax/evaluate.py", "polyflax/predict.py",
                                  "polyflax/scoring.py", "polyflax/calibration.py",
                                  "polyflax/inference.py",
                                  "polyflax/export.py", "polyflax/decode.py",
                                  "polyflax/model_setup.py", "polyflax/workdir.py",
                                  "polyflax/run_record.py", "polyflax/checkpoints.py",
                                  "polyflax/checkpoint_error.py", "polyflax/eval_batches.py",
                                  "polyflax/bucketing.py", "bench/bench_decode.py"])
def test_inference_code_does_not_import_training_code(path):
  assert not imported_modules(REPO / path) & TRAINING_MODULES


def training_modules_loaded_for_inference(folder):
  """What a fresh process importing the inference modules has loaded of TRAINING_MODULES."""
  del folder  # writes nothing
  code = ("import sys; from polyflax import cli, evaluate, export, inference, predict; "
          f"print(sorted(m for m in sys.modules if m.startswith('polyflax.') "
          f"and m[len('polyflax.'):] in {TRAINING_MODULES!r}))")
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=True)


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {"inference imports": training_modules_loaded_for_inference}


def test_evaluating_and_exporting_never_load_the_training_module(background_runs):
  result = background_runs["inference imports"].result()
  assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# The session's tiny run (conftest.py), exported.


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
  """(exported folder, the copy of the training workdir it was exported from, moved away after)."""
  root = tmp_path_factory.mktemp("export_run")
  run, moved = root / "run", root / "run_moved_away"
  shutil.copytree(tiny_run.workdir, run)
  target = tmp_path_factory.mktemp("shipped") / "tiny"
  config = config_files.set_fields(config_files.tiny(tiny_run.data_dir),
                                   {"export.dir": str(target)})
  assert cli.run("export", config, str(run)) == 0
  run.rename(moved)
  return target, moved


def test_exported_folder_holds_parameters_config_vocab_and_model_card(exported, tiny_run):
  folder, _ = exported
  assert sorted(os.listdir(folder)) == ["config.json", "model.json", "params", "vocab.json"]
  card = json.loads((folder / "model.json").read_text())
  saved_run_config = json.loads((tiny_run.workdir / "config.json").read_text())
  assert card["format"] == inference.EXPORT_FORMAT
  assert card["parameters"] == 22_560
  assert card["step"] == 23  # 1,520 examples in batches of 64: the last, best checkpoint
  assert set(card["validation"]) >= {"loss", "token_accuracy", "sequence_accuracy",
                                     "exact_match"}
  assert card["model"]["hidden_dim"] == 32
  assert card["config"] == saved_run_config
  assert card["trained_with"]["versions"]["jax"]
  assert card["trained_with"]["versions"]["flax"]
  assert card["trained_with"]["command"]
  assert card["exported_at"] and card["trained_with"]["saved_at"]
  # The training examples to the exported step, and at each validation.
  assert card["trained_with"]["train_examples"] == 23 * 64
  assert [(entry["step"], entry["examples"]) for entry in card["validation_history"]] == [
      (12, 12 * 64), (23, 23 * 64)]
  assert json.loads((folder / "config.json").read_text()) == saved_run_config


def test_exported_card_carries_a_threshold_calibrated_on_the_validation_split(exported, tiny_run):
  folder, _ = exported
  card = json.loads((folder / "model.json").read_text())
  entry = card[calibration.CARD_KEY]
  validation_lines = (tiny_run[1] / "val_set.txt").read_text().splitlines()
  assert entry["data"] == str(tiny_run[1] / "val_set.txt")
  assert entry["lines"] == len(validation_lines) == 80
  assert 0 <= entry["wrong_flagged"] <= entry["wrong"] <= entry["lines"]
  assert entry["wrong_flagged"] <= entry["flagged"] <= entry["lines"]
  assert 0.0 <= entry["threshold"] <= 1.0
  assert (entry["beam_size"], entry["measure"]) == (1, calibration.MEASURE)
  model = inference.restore_for_inference(config_files.tiny(tiny_run[1]), str(folder))
  assert model.confidence_threshold == entry["threshold"]
  # A training run carries none; nor does a card exported before cards did.
  assert inference.restore_for_inference(tiny_run[0], str(tiny_run[2])).confidence_threshold is None


def test_a_card_whose_calibration_holds_no_threshold_is_refused_in_one_line(exported, tmp_path):
  folder, _ = exported
  copy = tmp_path / "tiny"
  shutil.copytree(folder, copy)
  card = json.loads((copy / "model.json").read_text())
  card[calibration.CARD_KEY]["threshold"] = "high"
  (copy / "model.json").write_text(json.dumps(card))
  with pytest.raises(checkpoints.CheckpointError, match="has no threshold in"):
    inference.read_model_card(str(copy))
  del card[calibration.CARD_KEY]  # as exported before cards carried one
  (copy / "model.json").write_text(json.dumps(card))
  assert calibration.CARD_KEY not in inference.read_model_card(str(copy))


def copy_without_data(run, tmp_path):
  """(an empty data folder, a copy of `run` whose config.json names it)."""
  empty = tmp_path / "no_data"
  copy = tmp_path / "run"
  shutil.copytree(run, copy)
  saved = json.loads((copy / "config.json").read_text())
  saved["data_dir"] = str(empty)
  (copy / "config.json").write_text(json.dumps(saved))
  return empty, copy


def test_export_without_the_validation_split_says_how_to_make_it(tiny_run, tmp_path, capsys):
  config, _, run = tiny_run
  empty, copy = copy_without_data(run, tmp_path)
  target = tmp_path / "exported"
  config = config_files.set_fields(config_files.tiny(empty), {"export.dir": str(target)})
  assert cli.run("export", config, str(copy)) == 2
  error = capsys.readouterr().err.strip()
  assert error.count("\n") == 0
  assert f"no validation split {empty / 'val_set.txt'} to calibrate" in error
  assert f"python -m polyflax.data split --inputs {empty} --seed 0 --size 2000" in error
  assert not target.exists() and not empty.exists()


def test_exported_parameters_are_float32_and_nothing_else(exported):
  folder, _ = exported
  metadata = json.loads((folder / "params" / "_METADATA").read_text())
  keys = metadata["tree_metadata"]
  assert keys and all("opt_state" not in key and "step" not in key for key in keys)
  arrays = jax.tree.leaves(read_arrays(folder / "params"))
  assert len(arrays) == len(keys)
  assert {array.dtype for array in arrays} == {np.dtype(np.float32)}
  assert sum(array.size for array in arrays) == 22_560


def test_exported_folder_files_and_size_are_small(exported):
  folder, _ = exported
  total, largest, _ = export.folder_size(folder)
  assert largest < 15 * 2**20
  assert total < 17 * 2**20
  # Files a shared folder can read: the export is not private to its writer.
  for path in (folder / "model.json", folder / "config.json", folder / "vocab.json"):
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


def test_exported_folder_names_no_path_of_the_machine_that_wrote_it(exported, tiny_run):
  folder, moved = exported
  card = json.loads((folder / "model.json").read_text())
  assert card["trained_with"]["checkpoint"] == os.path.join("checkpoints", "23")
  # The config keeps what the user gave (this test's data_dir is absolute);
  # the files Orbax writes and the card's record of the source must not.
  local_paths = (str(tiny_run.workdir.parent), str(moved.parent), str(folder.parent))
  for path in (folder / "params").rglob("*"):
    if path.is_file():
      content = path.read_bytes()
      assert not any(local.encode() in content for local in local_paths), path


def run_main(*args, stdin=None):
  return forked_python.run([sys.executable, "main.py", *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, input=stdin, timeout=600)


def run_main_side_by_side(*runs):
  """`run_main(*args, stdin=stdin)` of each (args, stdin), all at once; their results in order."""
  with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
    return list(pool.map(lambda run: run_main(*run[0], stdin=run[1]), runs))


def test_evaluate_and_predict_from_the_exported_folder_alone(exported, tiny_run, tmp_path):
  folder, moved = exported
  copy = tmp_path / "tiny"
  shutil.copytree(folder, copy)  # no training workdir, no optimizer state anywhere near
  out = tmp_path / "eval"
  two_lines = "(k-15)*(2*k+29)\n(21-t)*(-6*t-4)\n"
  # Four independent runs of main.py, side by side.
  evaluated, predicted, from_run, from_export = run_main_side_by_side(
      (("--config", "configs/tiny.py", "--workdir", copy, "--mode=evaluate",
        f"--config.eval.output_dir={out}", "--config.eval.limit=40"), None),
      (("--config", "configs/tiny.py", "--workdir", copy, "--mode=predict",
        "--expr", "(k-15)*(2*k+29)"), None),
      (("--config", "configs/tiny.py", "--workdir", moved, "--mode=predict"), two_lines),
      (("--config", "configs/tiny.py", "--workdir", copy, "--mode=predict"), two_lines))
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert evaluated.stdout.splitlines()[-1].startswith("Final Score = ")
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["num_examples"] == 40
  assert metrics["test_file"] == str(tiny_run.data_dir / "test_set.txt")  # the run's own split
  assert metrics["step"] == 23
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert len(predicted.stdout.splitlines()) == 1
  # The predictions equal those of the training run it came from.
  assert from_run.returncode == from_export.returncode == 0
  assert from_run.stdout == from_export.stdout
  assert sorted(os.listdir(copy)) == ["config.json", "model.json", "params", "vocab.json"]


def test_training_an_exported_folder_is_refused_in_one_line(exported, tiny_run, capsys):
  folder, _ = exported
  config = config_files.tiny(tiny_run.data_dir, generated_size=2000, max_epochs=1)
  assert cli.run("train", config, str(folder)) == 2
  error = capsys.readouterr().err.strip()
  assert error.count("\n") == 0
  assert error.startswith(f"error: {folder} is an exported model")
  assert sorted(os.listdir(folder)) == ["config.json", "model.json", "params", "vocab.json"]


def test_export_never_overwrites_a_folder_that_is_not_an_export(tiny_run, tmp_path, capsys):
  config, _, run = tiny_run
  target = tmp_path / "precious"
  target.mkdir()
  (target / "notes.txt").write_text("keep me")
  config = config_files.set_fields(config_files.tiny(config.data_dir), {"export.dir": str(target)})
  assert cli.run("export", config, str(run)) == 2
  assert "holds no exported model" in capsys.readouterr().err
  assert (target / "notes.txt").read_text() == "keep me"


def test_inference_restores_parameters_only(tiny_run, monkeypatch):
  config, _, run = tiny_run

  def full_restore(*args, **kwargs):
    raise AssertionError("inference restored a whole training state")

  monkeypatch.setattr(checkpoints.CheckpointStore, "restore", full_restore)
  model = inference.restore_for_inference(config, str(run))
  assert model.step == 23
  assert model.source.endswith(os.path.join("checkpoints", "23"))


def test_evaluation_never_generates_data_and_says_how_to_make_the_split(tiny_run, tmp_path,
                                                                        capsys):
  config, _, run = tiny_run
  empty, copy = copy_without_data(run, tmp_path)
  assert cli.run("evaluate", config_files.tiny(empty), str(copy)) == 2
  error = capsys.readouterr().err.strip()
  assert error.count("\n") == 0
  assert f"no test split {empty / 'test_set.txt'}" in error
  assert f"python -m polyflax.data split --inputs {empty} --seed 0 --size 2000" in error
  assert not empty.exists()


def test_default_output_of_an_exported_folder_is_outside_it(exported):
  folder, moved = exported
  assert evaluate.default_output_dir(str(folder)) == os.path.join("runs", "eval", folder.name)
  assert evaluate.default_output_dir(str(moved)) == os.path.join(str(moved), "eval")


@pytest.mark.slow  # trains
def test_seen_lines_of_a_generated_run_are_those_it_trained_on_also_once_exported(tmp_path):
  config = config_files.tiny(tmp_path / "inputs", generated_size=2000, max_epochs=1,
                             train_data="generated", generated_examples_per_epoch=1200)
  run = tmp_path / "run"
  train.train_and_evaluate(config, str(run))
  # The rows of epoch 0 its batches served (18 batches of 64: 48 of the 1,200 are left out).
  epoch_lines = example_sources.generated_lines(config.data_seed, 1200, 0, 0)
  stream = training_streams.GeneratedTrainIterator(
      example_sources.generated_examples(vocab_lib.Vocab.default(), config.max_len,
                                         config.data_seed, 1200),
      batch_size=config.batch_size, seed=config.seed,
      batching=input_pipeline.batching(config, sharding.make_mesh()), in_process=True)
  served = {int(row) for batch in itertools.islice(stream, stream.steps_per_epoch)
            for row in batch["index"] if row >= 0}
  stream.close()
  trained = [epoch_lines[row] for row in sorted(served)]
  left_out = [line for row, line in enumerate(epoch_lines)
              if row not in served and line not in set(trained)]
  later = [line for line in example_sources.generated_lines(config.data_seed, 1200, 1, 0)
           if line not in set(epoch_lines)]
  assert len(left_out) >= 10
  test_file = tmp_path / "test.txt"
  test_file.write_text("\n".join(trained[:20] + left_out[:10] + later[:20]) + "\n")
  shipped = tmp_path / "shipped"
  assert cli.run("export", config_files.set_fields(config, {"export.dir": str(shipped)}),
                 str(run)) == 0
  for workdir in (run, shipped):
    output_dir = tmp_path / f"eval_{workdir.name}"
    eval_config = config_files.set_fields(config, {"eval.test_file": str(test_file),
                                                   "eval.output_dir": str(output_dir)})
    assert cli.run("evaluate", eval_config, str(workdir)) == 0
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert (metrics["num_examples_seen"], metrics["num_examples_unseen"]) == (20, 30)
    assert metrics["trained_on"] == "generated lines: 1 epoch of 1,200 (data seed 0)"
