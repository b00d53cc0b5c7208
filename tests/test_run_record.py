"""The run record's training examples (polyflax/run_record.py): saved, carried, unknown when old."""

import json
import pathlib

import pytest

from polyflax import run_record

REPO = pathlib.Path(__file__).resolve().parents[1]


def record(**fields):
  return run_record.RunRecord(**dict(dict(
      model={"hidden_dim": 8}, iterator={"position": 3}, skipped_steps=0, command="test",
      versions={}, devices="1 x cpu", saved_at="2026-01-01T00:00:00+00:00"), **fields))


def test_training_examples_round_trip_through_json_and_the_card():
  history = [run_record.history_entry(10, 5.0, {"loss": 1.0, "exact_match": 0.5}, examples=640)]
  saved = record(train_examples=704, train_seconds=5.5, validation_history=history)
  assert run_record.RunRecord.from_json(json.loads(json.dumps(saved.to_json()))) == saved
  card = json.loads(json.dumps(saved.card_fields()))
  assert card["trained_with"]["train_examples"] == 704
  assert card["validation_history"][0]["examples"] == 640
  assert run_record.RunRecord.from_card(card) == saved


def test_records_and_cards_without_training_examples_load_with_them_unknown():
  old = record().to_json()
  del old["train_examples"]
  assert run_record.RunRecord.from_json(old).train_examples is None
  # The shipped model's card, as exports wrote it before the examples were counted.
  card = json.loads((REPO / "checkpoints" / "cpu" / "model.json").read_text())
  card["trained_with"].pop("train_examples", None)
  shipped = run_record.RunRecord.from_card(card)
  assert shipped.train_examples is None and shipped.validation_history


@pytest.mark.parametrize("bad", [-1, 2.5, "many", True])
def test_malformed_training_examples_are_refused_in_one_line(bad):
  with pytest.raises(ValueError, match="^the record's train_examples is not of the expected type$"):
    run_record.RunRecord.from_json(dict(record().to_json(), train_examples=bad))
