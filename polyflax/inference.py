"""Restoring a trained model for decoding: its parameters, never an optimizer state.

`restore_for_inference` accepts two kinds of folder as a workdir:

* a training run (`python main.py --workdir runs/red`): its best checkpoint
  (lowest validation loss), of which only the parameters are read, with an
  Orbax partial restore: their moving average when the run kept one
  (`ema_decay > 0`), since that is what it validated and chose the best by;
* an exported model (`--mode=export`, as shipped in `checkpoints/`), which
  holds nothing else:

    model.json    what the model is (see `export.py`): parameter count,
                  training step, validation figures, the confidence
                  threshold calibrated on the validation split, the config
                  and command it was trained with, versions, dates
    config.json   the resolved config of the run
    vocab.json    the vocabulary
    params/       the parameters, float32, a parameters-only Orbax checkpoint

In both, the folder's `config.json` decides the model's shape and the
fingerprint recorded beside the parameters must match it. The names of the
files are `workdir.py`'s; the record beside the parameters is a
`run_record.RunRecord` either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from polyflax import calibration as calibration_lib
from polyflax import checkpoints
from polyflax import config_checks
from polyflax import model_setup
from polyflax import models
from polyflax import run_record
from polyflax import sharding
from polyflax import vocab as vocab_lib
from polyflax import workdir as workdir_lib

# model.json's "format": what this version writes and reads.
EXPORT_FORMAT = "polyflax-exported-model/1"


@dataclasses.dataclass
class InferenceModel:
  """A restored model ready for decoding."""
  graphdef: Any
  params: Any  # replicated over `mesh`
  vocab: vocab_lib.Vocab
  model_cfg: models.ModelConfig
  mesh: Any
  step: int  # the training step of the parameters
  source: str  # the checkpoint step folder, or the exported folder
  # What was saved beside the parameters: the training checkpoint's run
  # record, or the one an exported model's card carries.
  record: run_record.RunRecord
  # The card's calibration (`calibration.card_entry`): None for a training
  # run, and for a folder exported before models carried one.
  calibration: dict | None = None

  @property
  def confidence_threshold(self) -> float | None:
    """The confidence below which an answer is doubted; None when the model has none."""
    return None if self.calibration is None else float(self.calibration["threshold"])


def read_model_card(workdir: str) -> dict:
  """The model.json of an exported folder.

  Raises:
    CheckpointError: naming the file, if it cannot be read or is not an
      exported model's card.
  """
  path = os.path.join(workdir, workdir_lib.MODEL_CARD_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      card = json.load(f)
    if not isinstance(card, dict) or card.get("format") != EXPORT_FORMAT:
      raise ValueError(f"not a model card of format {EXPORT_FORMAT}")
    if not isinstance(card.get("model"), dict) or not isinstance(card.get("step"), int):
      raise ValueError("no 'model' record or 'step'")
    run_record.RunRecord.from_card(card)  # raises ValueError naming what is missing
    calibration_lib.threshold_of_card(card)  # a calibration, if any, holds a threshold
  except (OSError, ValueError) as error:
    raise checkpoints.CheckpointError(
        f"cannot read the exported model's card {path}: {checkpoints.one_line(error)}"
    ) from error
  return card


def restore_for_inference(config: ml_collections.ConfigDict, workdir: str,
                          step: int | None = None) -> InferenceModel:
  """The parameters of `workdir`'s best checkpoint (or `step`), or of an exported folder.

  Raises:
    CheckpointError: one line naming the folder or file and what is wrong.
    ConfigError: if the merged config is invalid.
  """
  config = workdir_lib.run_config(config, workdir)
  config_checks.check_config(config)
  mesh = sharding.make_mesh()
  vocab = workdir_lib.load_vocab(workdir)
  model_cfg = model_setup.model_config(config, vocab.size)
  graphdef, abstract_params = model_setup.abstract_model(model_cfg)
  replicated = sharding.replicated(mesh)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        abstract_params)
  fingerprint = model_setup.model_fingerprint(model_cfg)

  if workdir_lib.is_exported(workdir):
    card = read_model_card(workdir)
    model_setup.check_fingerprint(card["model"], fingerprint, workdir)
    params = checkpoints.restore_params(os.path.join(workdir, workdir_lib.PARAMS_DIR), target)
    return InferenceModel(graphdef=graphdef, params=params, vocab=vocab, model_cfg=model_cfg,
                          mesh=mesh, step=card["step"], source=os.path.abspath(workdir),
                          record=run_record.RunRecord.from_card(card),
                          calibration=card.get(calibration_lib.CARD_KEY))

  directory = workdir_lib.checkpoints_dir(workdir)
  if not os.path.isdir(directory):
    raise checkpoints.CheckpointError(
        f"no checkpoints in {directory} and no {workdir_lib.MODEL_CARD_FILE} in {workdir}: "
        "train first "
        f"(python main.py --config ... --workdir {workdir}), or pass an exported model folder")
  store = checkpoints.CheckpointStore(directory, read_only=True)
  try:
    step = store.best_step() if step is None else step
    if step is None:
      raise checkpoints.CheckpointError(f"no complete checkpoint in {directory}")
    record = store.restore_record(step)
    model_setup.check_fingerprint(record.model, fingerprint, store.path(step))
    params = store.restore_params(step, target, field=store.model_params_field(step))
  finally:
    store.close()
  return InferenceModel(graphdef=graphdef, params=params, vocab=vocab, model_cfg=model_cfg,
                        mesh=mesh, step=step, source=store.path(step), record=record)
