"""What a training checkpoint records beside its state, and where a model came from.

`RunRecord` is the JSON item of every checkpoint (`checkpoints.py` writes
and reads it, and nothing else does): the data iterator's position, the
steps skipped so far, the model fingerprint, the command, versions and
devices of the run, when it was saved, the validation figures of the
step when it was a validation step, the training seconds and training
examples so far and the history of every validation up to the step
(`history_entry`). An exported
model's card (`model.json`)
carries the same fields (`RunRecord.card_fields` / `from_card`), so
evaluation reads one type whichever folder it is given.

`command_line`, `versions`, `devices` and `now` describe the running
process; a record and an export card are stamped with them.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import shlex
import sys
from importlib import metadata
from typing import Any, Mapping

# Fields a record may lack: records written before they existed still load.
_OPTIONAL_FIELDS = ("validation", "train_seconds", "validation_history", "train_examples")
# The libraries whose versions a record carries.
_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """The JSON item of a training checkpoint (see the module docstring)."""
  model: dict  # the model fingerprint (model_setup.model_fingerprint)
  iterator: dict  # the training stream's state (training_streams), to resume at the next batch
  skipped_steps: int  # steps skipped for a non-finite loss, so far
  command: str  # the command that trained the run
  versions: dict  # python and library versions (`versions`)
  devices: str  # e.g. "1 x cpu"
  saved_at: str  # ISO 8601, UTC
  validation: dict | None = None  # the validation metrics of this step, if it validated
  # Seconds of training up to this step, over every session (see `train.py`);
  # 0 in records written before they were counted.
  train_seconds: float = 0.0
  # Every validation up to this step, oldest first (`history_entry`); empty in
  # records written before the history was kept.
  validation_history: list = dataclasses.field(default_factory=list)
  # Training examples (real rows, never padding) of every step up to this one,
  # over every session (`progress.RunProgress`); None, unknown, in records
  # written before they were counted.
  train_examples: int | None = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, saved: Mapping[str, Any]) -> "RunRecord":
    """The record of a checkpoint's JSON item.

    Raises:
      ValueError: one line naming the fields that are missing or of the wrong type.
    """
    missing = [field.name for field in dataclasses.fields(cls)
               if field.name not in saved and field.name not in _OPTIONAL_FIELDS]
    if missing:
      raise ValueError(f"the record lacks {', '.join(missing)} (written by another version?)")
    record = cls(**{field.name: saved[field.name] for field in dataclasses.fields(cls)
                    if field.name in saved})
    wrong = [name for name, kind in (("model", dict), ("iterator", dict), ("skipped_steps", int),
                                     ("train_seconds", (int, float)),
                                     ("validation_history", list))
             if not isinstance(getattr(record, name), kind)]
    examples = record.train_examples
    if examples is not None and (not isinstance(examples, int) or isinstance(examples, bool)
                                 or examples < 0):
      wrong.append("train_examples")
    if not wrong and not all(isinstance(entry, Mapping) and "step" in entry
                             and "train_seconds" in entry
                             for entry in record.validation_history):
      wrong = ["validation_history"]
    if wrong:
      raise ValueError(f"the record's {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} "
                       "not of the expected type")
    return record

  def card_fields(self) -> dict:
    """What an exported model's card (model.json) carries of the record."""
    return {"validation": self.validation or {}, "validation_history": self.validation_history,
            "iterator": self.iterator, "model": self.model, "trained_with": {
                "command": self.command, "versions": self.versions, "devices": self.devices,
                "saved_at": self.saved_at, "skipped_steps": self.skipped_steps,
                "train_seconds": self.train_seconds, "train_examples": self.train_examples}}

  @classmethod
  def from_card(cls, card: Mapping[str, Any]) -> "RunRecord":
    """The record an exported model's card carries (see `card_fields`).

    Raises:
      ValueError: one line naming what the card lacks.
    """
    trained_with = card.get("trained_with")
    if not isinstance(trained_with, Mapping):
      raise ValueError("the card has no 'trained_with' record")
    # Cards exported before skipped steps, training seconds, the validation
    # history or the training examples were carried have none (the examples
    # stay unknown, None).
    return cls.from_json(dict(trained_with, skipped_steps=trained_with.get("skipped_steps", 0),
                              train_seconds=trained_with.get("train_seconds", 0.0),
                              model=card.get("model"), iterator=card.get("iterator"),
                              validation=card.get("validation") or None,
                              validation_history=card.get("validation_history") or []))


def history_entry(step: int, train_seconds: float, validation: Mapping[str, Any],
                  examples: int | None = None) -> dict:
  """One validation of a run, as `RunRecord.validation_history` keeps it.

  {step, train_seconds, examples, exact_match, loss}: `examples` is the
  training examples seen by then (`RunRecord.train_examples`; None when
  unknown, a run resumed from a record without them), `exact_match` the
  greedy exact match of the validation sample (None when the run decodes
  none, `val_exact_match_examples=0`), `loss` the teacher-forced validation
  loss. Entries written before the examples were counted have no `examples`.
  """
  exact_match = validation.get("exact_match")
  return {"step": int(step), "train_seconds": float(train_seconds),
          "examples": None if examples is None else int(examples),
          "exact_match": None if exact_match is None else float(exact_match),
          "loss": float(validation["loss"])}


def command_line() -> str:
  """This process's command, as a shell would take it back (`python main.py ...`)."""
  argv = list(sys.argv)
  return shlex.join((["python"] if argv and argv[0].endswith(".py") else []) + argv)


def versions() -> dict:
  """Versions of Python and of the libraries a model depends on (None: not installed)."""
  found = {"python": platform.python_version()}
  for package in _VERSIONED_PACKAGES:
    try:
      found[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      found[package] = None
  return found


def devices() -> str:
  """The devices jax computes on, e.g. "8 x NVIDIA H200"."""
  import jax  # pylint: disable=g-import-not-at-top
  return f"{jax.device_count()} x {jax.devices()[0].device_kind}"


def now() -> str:
  """The current time, UTC, ISO 8601 to the second."""
  return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
