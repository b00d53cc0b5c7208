"""Exporting a trained run into a small, self-contained model folder.

  python main.py --config configs/default.py --workdir runs/red --mode=export \
      --config.export.dir=checkpoints/red

writes the folder that `inference.restore_for_inference` reads (its layout is
in inference.py's docstring): the best checkpoint's parameters in float32
(their moving average for a run with `ema_decay > 0`, saved as ordinary
parameters) and nothing of the optimizer, the run's `config.json` and `vocab.json`, and a
`model.json` that says what the model is:

  format        "polyflax-exported-model/1"
  parameters    the parameter count
  step          the training step of the parameters
  validation    the validation figures logged at that step
  validation_history  every validation of the run, to its latest checkpoint
                (which may come after the exported step): step,
                train_seconds, examples (training examples seen; none in
                histories from before they were counted), exact_match, loss
                (scripts/time_to_accuracy.py)
  calibration   the confidence threshold below which an answer is doubted,
                chosen on the run's generated validation split
                (`calibration.py`), and what it was measured on: lines,
                wrong answers, answers and wrong answers it flags, the
                decoding method, when
  model         the model fields (the fingerprint checked on restore)
  iterator      where the training stream stood at that step
  trained_with  the command, the versions (python, jax, flax, optax,
                orbax-checkpoint) and devices of the training run, when
                the checkpoint was saved, the steps skipped, the training
                seconds (validation apart) and training examples (null:
                unknown) to that step, the step folder
  config        the resolved config of the run
  exported_at, exported_with   when and with which versions it was exported

The folder is built beside the target and renamed into place, so an
interrupted export leaves the previous one (if any) whole.

An exported folder is calibrated again in place (its model.json alone is
rewritten, the parameters are untouched), e.g. one exported before models
carried a threshold:

  python -m polyflax.export calibrate --config configs/cpu.py --workdir checkpoints/cpu
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Sequence

import jax
import ml_collections
import numpy as np

from polyflax import calibration
from polyflax import checkpoints
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import decode
from polyflax import fileio
from polyflax import inference
from polyflax import input_pipeline
from polyflax import model_setup
from polyflax import models
from polyflax import run_record
from polyflax import workdir as workdir_lib


def folder_size(directory: str) -> tuple[int, int, str]:
  """(total bytes, bytes of the largest file, its path relative to `directory`)."""
  total, largest, largest_path = 0, 0, ""
  for path in pathlib.Path(directory).rglob("*"):
    if path.is_file():
      size = path.stat().st_size
      total += size
      if size > largest:
        largest, largest_path = size, str(path.relative_to(directory))
  return total, largest, largest_path


def _check_target(export_dir: str, workdir: str) -> None:
  """Refuses a target that would overwrite something other than an exported model."""
  if os.path.abspath(export_dir) == os.path.abspath(workdir):
    raise checkpoints.CheckpointError(
        f"--config.export.dir={export_dir} is the run's own workdir: choose another folder")
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise checkpoints.CheckpointError(f"{export_dir} exists and is not a folder")
  if (os.path.isdir(export_dir) and os.listdir(export_dir)
      and not workdir_lib.is_exported(export_dir)):
    raise checkpoints.CheckpointError(
        f"{export_dir} is not empty and holds no exported model: choose another "
        "--config.export.dir (an exported model there would be replaced)")


def run_history(workdir: str, record: run_record.RunRecord) -> list:
  """The validation history of the whole run: its latest checkpoint's, when that one goes further.

  The exported step is the best one, often not the last; the latest
  checkpoint's history holds the exported step's and the validations after
  it (a resumed run carries the history of the checkpoint it resumed from).
  """
  store = checkpoints.CheckpointStore(workdir_lib.checkpoints_dir(workdir), read_only=True)
  try:
    latest = store.latest_step()
    history = store.restore_record(latest).validation_history if latest is not None else []
  finally:
    store.close()
  return list(history if len(history) > len(record.validation_history)
              else record.validation_history)


def validation_split(run_config: ml_collections.ConfigDict) -> pathlib.Path:
  """The generated validation split of the run's data folder, which calibration decodes.

  Raises:
    FileNotFoundError: saying how to make it, when it is missing.
  """
  path = data_lib.split_paths(run_config.data_dir)["val"]
  if not path.exists():
    raise FileNotFoundError(
        f"no validation split {path} to calibrate the confidence threshold on: make the run's "
        "splits with `" + data_lib.split_command(run_config.data_dir, run_config.data_seed,
                                                 run_config.generated_size) + "`")
  return path


def calibrate(run_config: ml_collections.ConfigDict, model: inference.InferenceModel) -> dict:
  """Decodes the run's validation split; returns the card's calibration (`calibration.card_entry`).

  `run_config` is the run's config with this command's evaluation settings
  (`workdir.run_config`): its decoding method and batch size are used.
  """
  path = validation_split(run_config)
  pairs = data_lib.read_pairs(path, skip_bad=run_config.skip_bad_lines).pairs
  eval_cfg = run_config.eval
  if jax.process_index() == 0:
    print(f"calibrating the confidence threshold on {len(pairs):,} lines of {path}", flush=True)
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=model.model_cfg.max_len, beam_size=eval_cfg.beam_size,
                           length_penalty=eval_cfg.length_penalty,
                           batching=input_pipeline.batching(run_config, model.mesh))
  source_ids = model.vocab.encode_batch([factored for factored, _ in pairs],
                                        model.model_cfg.max_len)
  decoded = decoder.decode_ids_with_confidence(source_ids, batch_size=eval_cfg.batch_size,
                                               progress=True)
  correct = [predicted == expanded for predicted, (_, expanded) in zip(decoded.texts, pairs)]
  return calibration.card_entry(decoded.confidences, correct, data=str(path),
                                beam_size=eval_cfg.beam_size,
                                length_penalty=eval_cfg.length_penalty,
                                calibrated_at=run_record.now())


def calibrate_folder(config: ml_collections.ConfigDict, folder: str) -> dict:
  """Calibrates an exported folder's threshold again, in place; returns the new calibration.

  Only model.json is rewritten (atomically), with every other field kept.

  Raises:
    CheckpointError: if `folder` is not an exported model or cannot be read.
    FileNotFoundError: if the run's validation split is missing.
  """
  if not workdir_lib.is_exported(folder):
    raise checkpoints.CheckpointError(
        f"{folder} holds no {workdir_lib.MODEL_CARD_FILE}: not an exported model folder "
        "(a training run is calibrated when it is exported)")
  config_checks.check_config(config)
  card = inference.read_model_card(folder)
  run_config = workdir_lib.run_config(config, folder)
  validation_split(run_config)  # before the restore: a missing split is quick to tell
  model = inference.restore_for_inference(config, folder)
  card[calibration.CARD_KEY] = calibrate(run_config, model)
  fileio.write_text_atomic(os.path.join(folder, workdir_lib.MODEL_CARD_FILE),
                           json.dumps(card, indent=2))
  return card[calibration.CARD_KEY]


def export_run(config: ml_collections.ConfigDict, workdir: str, export_dir: str) -> dict:
  """Writes the exported folder of `workdir`'s best checkpoint; returns its model card.

  Raises:
    CheckpointError: if `workdir` has no usable checkpoint, is itself an
      exported folder, or `export_dir` cannot be (over)written.
  """
  if workdir_lib.is_exported(workdir):
    raise checkpoints.CheckpointError(
        f"{workdir} is already an exported model: copy the folder instead")
  _check_target(export_dir, workdir)
  run_config = workdir_lib.read_run_config(workdir)
  if run_config is None:
    raise checkpoints.CheckpointError(
        f"no {workdir_lib.CONFIG_FILE} in {workdir}: not a training run's workdir")
  merged_config = workdir_lib.run_config(config, workdir)
  validation_split(merged_config)  # before the restore: a missing split is quick to tell
  model = inference.restore_for_inference(config, workdir)
  model_calibration = calibrate(merged_config, model)
  params = jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), jax.device_get(model.params))
  # The record's validation, iterator (with generated lines, evaluation makes
  # the epochs trained again to tell seen test lines from unseen), model and
  # trained_with fields, as `run_record.RunRecord.from_card` reads them back.
  recorded = model.record.card_fields()
  recorded["validation_history"] = run_history(workdir, model.record)
  # The step folder, relative to the run's workdir: no path of the machine
  # that exported it.
  recorded["trained_with"]["checkpoint"] = os.path.relpath(model.source, workdir)
  card = {
      "format": inference.EXPORT_FORMAT,
      "parameters": models.count_params(params),
      "step": model.step,
      **recorded,
      calibration.CARD_KEY: model_calibration,
      "model": model_setup.model_fingerprint(model.model_cfg),
      "config": run_config,
      "exported_at": run_record.now(),
      "exported_with": run_record.versions(),
  }

  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  building = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(export_dir)}.")
  try:
    os.chmod(building, fileio.ordinary_dir_mode())  # mkdtemp makes it 0700
    checkpoints.save_params(os.path.join(building, workdir_lib.PARAMS_DIR), params)
    fileio.write_text_atomic(os.path.join(building, workdir_lib.CONFIG_FILE),
                             json.dumps(run_config, indent=2))
    fileio.write_text_atomic(os.path.join(building, workdir_lib.VOCAB_FILE),
                             model.vocab.to_json())
    fileio.write_text_atomic(os.path.join(building, workdir_lib.MODEL_CARD_FILE),
                             json.dumps(card, indent=2))
    if os.path.isdir(export_dir):
      shutil.rmtree(export_dir)
    os.replace(building, export_dir)
  except BaseException:
    shutil.rmtree(building, ignore_errors=True)
    raise
  return card


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m polyflax.export calibrate --config FILE --workdir FOLDER [--config.FIELD=V]`.

  Returns the exit status: 0 done, 2 with one line `error: ...` for a
  folder, config or validation split that cannot be used.
  """
  parser = argparse.ArgumentParser(
      prog="python -m polyflax.export",
      description="Calibrate an exported model's confidence threshold again, in place.")
  parser.add_argument("command", choices=["calibrate"],
                      help="calibrate: rewrite the threshold in FOLDER/model.json")
  parser.add_argument("--config", required=True,
                      help="config file (its eval fields: decoding method and batch size)")
  parser.add_argument("--workdir", required=True, help="the exported model folder")
  args, overrides = parser.parse_known_args(argv)
  from polyflax import compile_cache  # pylint: disable=g-import-not-at-top
  from polyflax import config_files  # pylint: disable=g-import-not-at-top
  try:
    config = config_files.load(args.config, overrides)
  except Exception as error:  # pylint: disable=broad-except  # absl's and ml_collections' many
    print(f"error: --config {args.config} {' '.join(overrides)}: "
          f"{checkpoints.one_line(error)}", file=sys.stderr)
    return 2
  try:
    compile_cache.enable()
    entry = calibrate_folder(config, args.workdir)
  except (config_checks.ConfigError, data_lib.DataError, checkpoints.CheckpointError,
          OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"{args.workdir}: confidence threshold {entry['threshold']:.6g}: it flags "
        f"{entry['flagged']:,} of {entry['lines']:,} validation answers and "
        f"{entry['wrong_flagged']:,} of the {entry['wrong']:,} wrong ones; "
        f"wrote {os.path.join(args.workdir, workdir_lib.MODEL_CARD_FILE)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
