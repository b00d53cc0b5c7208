"""The validation history: its record, its clock, and scripts/time_to_accuracy.py reading it."""

import json
import pathlib
import sys

import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax import progress, run_record

REPO = pathlib.Path(__file__).resolve().parents[1]

# (step, train_seconds, exact_match, loss) of a synthetic run.
VALIDATIONS = [(1000, 600.0, 0.52, 0.9), (2000, 1250.5, 0.8875, 0.3), (3000, 1900.0, 0.95, 0.2),
               (4000, 4000.0, 0.9905, 0.1), (5000, 5000.0, 0.985, 0.12)]
HISTORY = [{"step": step, "train_seconds": seconds, "exact_match": exact_match, "loss": loss}
           for step, seconds, exact_match, loss in VALIDATIONS]


def record(**fields):
  return run_record.RunRecord(**dict(dict(
      model={"hidden_dim": 8}, iterator={"position": 3}, skipped_steps=0, command="test",
      versions={}, devices="1 x cpu", saved_at="2026-01-01T00:00:00+00:00"), **fields))


def run_script(*arguments):
  return forked_python.run([sys.executable, "scripts/time_to_accuracy.py", *map(str, arguments)],
                        cwd=REPO, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------
# The record and the clock.


def test_training_clock_goes_on_from_the_checkpoint_and_leaves_pauses_out():
  now = [100.0]
  clock = progress.TrainingClock(50.0, clock=lambda: now[0])
  assert clock.seconds() == 50.0  # not started: nothing counts
  clock.start()
  now[0] += 10.0
  assert clock.pause() == 60.0
  now[0] += 1000.0  # validating
  assert clock.seconds() == 60.0
  clock.start()
  clock.start()  # a second start does not restart the count
  now[0] += 5.0
  assert clock.seconds() == 65.0


def test_history_entry_keeps_step_seconds_examples_exact_match_and_loss():
  entry = run_record.history_entry(7, 12, {"loss": 0.5, "exact_match": 0.25, "token_accuracy": 1},
                                   examples=448)
  assert entry == {"step": 7, "train_seconds": 12.0, "examples": 448, "exact_match": 0.25,
                   "loss": 0.5}
  assert run_record.history_entry(7, 12, {"loss": 0.5})["exact_match"] is None
  assert run_record.history_entry(7, 12, {"loss": 0.5})["examples"] is None  # unknown


def test_record_round_trips_its_history_through_json_and_the_card():
  saved = record(validation={"loss": 0.1, "exact_match": 0.99}, train_seconds=4000.0,
                 validation_history=HISTORY[:4])
  assert run_record.RunRecord.from_json(json.loads(json.dumps(saved.to_json()))) == saved
  card = json.loads(json.dumps(saved.card_fields()))
  assert card["validation_history"] == HISTORY[:4]
  assert card["trained_with"]["train_seconds"] == 4000.0
  assert run_record.RunRecord.from_card(card) == saved


def test_records_and_cards_written_before_the_history_still_load():
  old = record().to_json()
  del old["train_seconds"], old["validation_history"]
  loaded = run_record.RunRecord.from_json(old)
  assert loaded.validation_history == [] and loaded.train_seconds == 0.0
  card = json.loads((REPO / "checkpoints" / "cpu" / "model.json").read_text())
  shipped = run_record.RunRecord.from_card(card)
  assert len(shipped.validation_history) == len(card["validation_history"]) == 30
  assert shipped.train_seconds > 0 and shipped.train_examples > 0
  # The card as models exported before the history was kept wrote it.
  older = run_record.RunRecord.from_card(card_without_history(card))
  assert older.validation_history == [] and older.train_seconds == 0.0
  assert older.validation["exact_match"] == 1.0


def card_without_history(card: dict) -> dict:
  """A model card as exports wrote it before the validation history was kept."""
  older = json.loads(json.dumps(card))
  del older["validation_history"], older["trained_with"]["train_seconds"]
  return older


def test_a_malformed_history_is_refused_in_one_line():
  with pytest.raises(ValueError, match="^the record's validation_history is not of the expected"):
    run_record.RunRecord.from_json(dict(record().to_json(), validation_history={"step": 1}))
  with pytest.raises(ValueError, match="validation_history"):
    run_record.RunRecord.from_json(dict(record().to_json(), validation_history=[{"step": 1}]))


# ---------------------------------------------------------------------------
# The script.


def test_time_to_accuracy_reads_an_exported_card(tmp_path):
  card = dict(record(validation_history=HISTORY).card_fields(), step=4000)
  (tmp_path / "model.json").write_text(json.dumps(card))
  for source in (tmp_path / "model.json", tmp_path):  # the card or its folder
    result = run_script(source)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'model.json'} (exported model card): 5 validations, to step 5,000 after "
        "1:23:20 of training (validation apart)",
        "exact match >= 0.8875: 0:20:50 (1250 s), examples unknown, at step 2,000 "
        "(exact match 0.8875)",
        "exact match >= 0.99: 1:06:40 (4000 s), examples unknown, at step 4,000 "
        "(exact match 0.9905)",
        "exact match >= 0.999: not reached"]
  result = run_script(tmp_path / "model.json", "--thresholds", "0.5", "0.96")
  assert result.stdout.splitlines()[1:] == [
      "exact match >= 0.5: 0:10:00 (600 s), examples unknown, at step 1,000 (exact match 0.5200)",
      "exact match >= 0.96: 1:06:40 (4000 s), examples unknown, at step 4,000 "
      "(exact match 0.9905)"]
  # A history with the training examples says them.
  counted = [dict(entry, examples=entry["step"] * 64) for entry in HISTORY]
  card = dict(record(validation_history=counted, train_examples=320_000).card_fields(), step=5000)
  (tmp_path / "model.json").write_text(json.dumps(card))
  result = run_script(tmp_path / "model.json", "--thresholds", "0.8875")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[1:] == [
      "exact match >= 0.8875: 0:20:50 (1250 s), 128,000 examples, at step 2,000 "
      "(exact match 0.8875)"]


def test_time_to_accuracy_reads_event_files_with_a_resumed_run_repeating_steps(tmp_path):
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  # Session 1 validates to step 3000 then dies; session 2 resumes from step
  # 2000 and logs step 3000 again, reaching 0.99 there this time.
  sessions = ((".1", VALIDATIONS[:3]),
              (".2", [(3000, 1800.0, 0.991, 0.2), *VALIDATIONS[3:]]))
  for suffix, validations in sessions:
    with SummaryWriter(str(tmp_path), filename_suffix=suffix) as writer:
      for step, seconds, exact_match, loss in validations:
        writer.add_scalar("val/loss", loss, step)
        writer.add_scalar("val/exact_match", exact_match, step)
        writer.add_scalar("val/train_seconds", seconds, step)
  result = run_script(tmp_path, "--thresholds", "0.99")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f"{tmp_path} (event files): 5 validations, to step 5,000 after 1:23:20 of training "
      "(validation apart)",
      "exact match >= 0.99: 0:30:00 (1800 s), examples unknown, at step 3,000 "
      "(exact match 0.9910)"]


def test_time_to_accuracy_reads_training_examples_from_event_files(tmp_path):
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  # Dense early validations, of a run whose batches vary in rows; the first
  # validation was logged before the examples were.
  with SummaryWriter(str(tmp_path)) as writer:
    for step, seconds, examples, exact_match in ((100, 60.0, None, 0.5),
                                                 (190, 115.0, 20_480, 0.8),
                                                 (283, 170.0, 30_720, 0.89),
                                                 (1000, 600.0, 107_008, 0.95)):
      writer.add_scalar("val/exact_match", exact_match, step)
      writer.add_scalar("val/train_seconds", seconds, step)
      if examples is not None:
        writer.add_scalar("val/train_examples", examples, step)
  result = run_script(tmp_path, "--thresholds", "0.5", "0.8875")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[1:] == [
      "exact match >= 0.5: 0:01:00 (60 s), examples unknown, at step 100 (exact match 0.5000)",
      "exact match >= 0.8875: 0:02:50 (170 s), 30,720 examples, at step 283 "
      "(exact match 0.8900)"]


def test_time_to_accuracy_refuses_a_source_without_history(tmp_path):
  card = json.loads((REPO / "checkpoints" / "cpu" / "model.json").read_text())
  (tmp_path / "older").mkdir()
  (tmp_path / "older" / "model.json").write_text(json.dumps(card_without_history(card)))
  older = run_script(tmp_path / "older")  # exported before the history was kept
  assert older.returncode == 1
  assert older.stderr.startswith("error: no validation history with exact match in ")
  missing = run_script(tmp_path / "nothing")
  assert missing.returncode == 1 and "no such run folder or model card" in missing.stderr
  bad = run_script(tmp_path, "--thresholds", "99")
  assert bad.returncode == 2 and "between 0 and 1" in bad.stderr


def test_time_to_accuracy_falls_back_on_the_latest_checkpoint_without_event_files(tmp_path):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from polyflax import checkpoints  # pylint: disable=import-outside-toplevel
  store = checkpoints.CheckpointStore(str(tmp_path / "checkpoints"))
  for count, (step, _, _, loss) in enumerate(VALIDATIONS[:4], start=1):
    store.save(step, {"weights": jnp.zeros((2,))}, record(
        validation={"loss": loss}, train_seconds=HISTORY[count - 1]["train_seconds"],
        validation_history=HISTORY[:count]))
  store.close()
  result = run_script(tmp_path, "--thresholds", "0.99")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[-2:] == [
      f"{tmp_path} (latest checkpoint's record): 4 validations, to step 4,000 after 1:06:40 of "
      "training (validation apart)",
      "exact match >= 0.99: 1:06:40 (4000 s), examples unknown, at step 4,000 "
      "(exact match 0.9905)"]
