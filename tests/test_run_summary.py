"""The closing lines of a training run: what it reached, where it is, what to run next."""

import re

import pytest

from polyflax import run_summary


def entry(step, exact_match, loss):
  return {"step": step, "train_seconds": float(step), "exact_match": exact_match, "loss": loss}


@pytest.mark.parametrize("argv, expected", [
    (["main.py", "--config", "configs/tiny.py", "--workdir", "runs/t"],
     ("python main.py", "configs/tiny.py")),
    (["/repo/main.py", "--config=configs/cpu.py:8", "--workdir=runs/t"],
     ("python /repo/main.py", "configs/cpu.py:8")),
    (["/usr/bin/polyflax", "--config", "a.py", "--config", "b.py"], ("polyflax", "b.py")),
    (["/env/lib/python3/site-packages/polyflax/__main__.py", "-config", "c.py"],
     ("python -m polyflax", "c.py")),
    (["/env/bin/pytest", "-q", "tests"], ("python main.py", None)),
    ([], ("python main.py", None)),
])
def test_the_command_is_written_as_the_user_typed_it(argv, expected):
  assert run_summary.user_command(argv) == expected


def lines(history, *, step=46, completed=True, best_step=23,
          argv=("main.py", "--config", "configs/tiny.py", "--workdir", "runs/my run")):
  return run_summary.closing_lines(
      workdir="runs/my run", checkpoints_dir="/abs/runs/my run/checkpoints", step=step,
      total_steps=46, steps_per_epoch=23, history=history, best_step=best_step,
      completed=completed, argv=list(argv))


def test_a_completed_short_run_says_what_it_reached_where_it_is_and_what_learns_the_task():
  said = lines([entry(23, 0.0, 2.0), entry(46, 0.125, 1.5)], best_step=46)
  assert said[0] == ("training done: 46 steps, 2.00 epochs; best validation exact match "
                     "0.1250 at step 46 (2 validations)")
  assert said[1] == ("checkpoints: /abs/runs/my run/checkpoints (evaluate, predict and export "
                     "read step 46, the best by validation loss)")
  command = "python main.py --config configs/tiny.py --workdir 'runs/my run'"
  assert said[2:5] == [f"evaluate: {command} --mode=evaluate",
                       f"predict: {command} --mode=predict --expr \"(k-15)*(2*k+29)\"",
                       "view: tensorboard --logdir 'runs/my run'"]
  note = said[5]
  assert note.startswith("note: ") and len(said) == 6
  for named in ("configs/tiny.py", "configs/cpu.py", "configs/default.py", "docs/results.md"):
    assert named in note
  # It quotes no measured figure: no number but those of the file names.
  assert not re.search(r"\d", note.replace("docs/results.md", ""))


def test_of_equal_exact_matches_the_lower_loss_is_the_best():
  said = lines([entry(23, 0.0, 2.0), entry(46, 0.0, 1.5)], best_step=46)
  assert said[0].endswith("best validation exact match 0.0000 at step 46 (2 validations)")


def test_a_run_that_learned_the_task_gets_no_note():
  said = lines([entry(23, 0.25, 2.0), entry(46, 0.75, 0.5)], best_step=46)
  assert said[0].endswith("best validation exact match 0.7500 at step 46 (2 validations)")
  assert not any(line.startswith("note:") for line in said)


def test_a_stopped_run_says_where_it_stopped_and_gets_no_note():
  said = lines([entry(23, 0.0, 2.0)], step=30, completed=False, best_step=23)
  assert said[0] == ("training stopped at step 30 of 46, epoch 1.30 of 2.00; best validation "
                     "exact match 0.0000 at step 23 (1 validation)")
  assert "read step 23, the best by validation loss" in said[1]
  assert not any(line.startswith("note:") for line in said)
  said = lines([], step=7, completed=False, best_step=7)
  assert said[0].endswith("; no validation yet")
  assert said[1] == ("checkpoints: /abs/runs/my run/checkpoints (evaluate, predict and export "
                     "read step 7)")


def test_a_run_that_decodes_nothing_reports_its_best_loss():
  said = lines([entry(23, None, 2.0), entry(46, None, 2.5)])
  assert said[0].endswith("best validation loss 2.0000 at step 23 (2 validations, none decoded)")
  assert not any(line.startswith("note:") for line in said)


def test_a_run_started_from_python_names_the_config_it_cannot_know():
  said = lines([], argv=("/env/bin/pytest",))
  assert said[2] == ("evaluate: python main.py --config CONFIG --workdir 'runs/my run' "
                     "--mode=evaluate")
