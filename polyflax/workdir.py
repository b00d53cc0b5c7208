"""The map of a workdir: the names of its files and folders, and its run files.

A training run's workdir (`python main.py --workdir runs/red`):

  config.json    the resolved config (`write_run_files`, `read_run_config`)
  vocab.json     the vocabulary (`load_vocab`)
  checkpoints/   the Orbax checkpoints (`checkpoints.CheckpointStore`)
  eval/          what `--mode=evaluate` writes by default
  events.out.tfevents.*   TensorBoard events
  training.lock  held by the training run in progress, and naming it
                 (`run_lock.py`; evaluation, prediction and export take no lock)

An exported model folder (`--mode=export`, as shipped in `checkpoints/`):

  model.json     the model card (`export.py` writes it, `inference.py` reads it)
  config.json, vocab.json   as above
  params/        the parameters alone

A workdir's `config.json` decides the model's shape whenever the run is
restored (`run_config`). Every failure to read these files is a one-line
`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os

import ml_collections

from polyflax import checkpoint_error
from polyflax import fileio
from polyflax import vocab as vocab_lib

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CHECKPOINTS_DIR = "checkpoints"
EVAL_DIR = "eval"
MODEL_CARD_FILE = "model.json"
PARAMS_DIR = "params"
LOCK_FILE = "training.lock"
# Fields of a run's config.json that a later evaluation or prediction keeps,
# whatever its own config says: the model's shape, and the data it was
# trained on (its test and training splits).
RUN_MODEL_FIELDS = ("max_len",)
RUN_DATA_FIELDS = ("data_dir", "generated_size", "data_seed", "generated_cancel_fraction",
                   "generated_near_cancel_fraction", "generated_edge_fraction")
# What a data field was in runs saved before it existed: the data's own mix.
RUN_DATA_DEFAULTS = {"generated_near_cancel_fraction": 0.0, "generated_edge_fraction": 0.0}


def checkpoints_dir(workdir: str) -> str:
  """The folder of a training run's checkpoints."""
  return os.path.join(workdir, CHECKPOINTS_DIR)


def lock_file(workdir: str) -> str:
  """The file a training run holds its workdir by (see `run_lock.py`)."""
  return os.path.join(workdir, LOCK_FILE)


def is_exported(workdir: str) -> bool:
  """Whether `workdir` is an exported model folder (it has a model.json)."""
  return os.path.exists(os.path.join(workdir, MODEL_CARD_FILE))


def write_run_files(workdir: str, config: ml_collections.ConfigDict,
                    vocab: vocab_lib.Vocab) -> None:
  """The resolved config and the vocabulary, beside the checkpoints (atomically)."""
  fileio.write_text_atomic(os.path.join(workdir, CONFIG_FILE),
                           config.to_json_best_effort(indent=2))
  fileio.write_text_atomic(os.path.join(workdir, VOCAB_FILE), vocab.to_json())


def read_run_config(workdir: str) -> dict | None:
  """The run's saved config as a dict, or None when the workdir has none.

  Raises:
    CheckpointError: naming the file, when it cannot be read or is not a
      config object.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if not isinstance(saved, dict) or not isinstance(saved.get("model", {}), dict):
      raise ValueError("not a config object")
  except (OSError, ValueError) as error:  # ValueError: bad JSON, not UTF-8
    raise checkpoint_error.CheckpointError(
        f"cannot read the run's config {path}: {checkpoint_error.one_line(error)}") from error
  return saved


def run_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` with the model and data fields the run in `workdir` was trained with.

  A workdir's `config.json` decides the model's shape, so a checkpoint is
  always restored into the model that wrote it, and names the data folder
  whose test and training splits belong to the run. Evaluation settings
  still come from `config` and its command-line overrides.
  """
  saved = read_run_config(workdir)
  if saved is None:
    return config
  merged = ml_collections.ConfigDict(config.to_dict())
  for name, value in saved.get("model", {}).items():
    if name in merged.model:
      merged.model[name] = value
  for name in RUN_MODEL_FIELDS + RUN_DATA_FIELDS:
    if name in merged and (name in saved or name in RUN_DATA_DEFAULTS):
      merged[name] = saved.get(name, RUN_DATA_DEFAULTS.get(name))
  return merged


def load_vocab(workdir: str) -> vocab_lib.Vocab:
  """The workdir's vocabulary; its tokens must be the ones this code encodes with.

  The digit order is the saved one (a model trained with reversed digits
  decodes with them). A workdir without `vocab.json` (a run that has not
  saved yet) gets the default vocabulary.
  """
  path = os.path.join(workdir, VOCAB_FILE)
  default = vocab_lib.Vocab.default()
  if not os.path.exists(path):
    return default
  try:
    saved = vocab_lib.Vocab.load(path)
  except (OSError, ValueError) as error:  # ValueError: bad JSON, bad tokens, not UTF-8
    raise checkpoint_error.CheckpointError(
        f"cannot read the vocabulary {path}: {checkpoint_error.one_line(error)}") from error
  if saved.tokens != default.tokens:
    raise checkpoint_error.CheckpointError(
        f"vocabulary {path} does not match this version's vocabulary: "
        f"{_vocab_difference(saved, default)}; its checkpoints encode tokens differently")
  return saved


def _vocab_difference(saved: vocab_lib.Vocab, current: vocab_lib.Vocab) -> str:
  for token_id, (there, here) in enumerate(zip(saved.tokens, current.tokens)):
    if there != here:
      return (f"id {token_id} is {there!r} there and {here!r} here "
              f"({saved.size} tokens there, {current.size} here)")
  return f"{saved.size} tokens there, {current.size} here"
