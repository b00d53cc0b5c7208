"""scripts/eval_table.py and scripts/training_time.py (scripts/gpu_runs.sh: tests/test_gpu_runs.py)."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_eval_table_puts_evaluations_side_by_side(tmp_path):
  from polyflax import scoring  # pylint: disable=import-outside-toplevel
  pairs = [("(k-15)*(2*k+29)", "2*k**2-k-435"), ("(17-2*i)*(i+8)", "-2*i**2+i+136"),
           ("2*y*(7*y-11)", "14*y**2-22*y")]
  first = scoring.score(pairs, ["2*k**2-k-435", "-2*i**2+3*i+136", "14*y**2-22*y"],
                        seen_lines={"2*y*(7*y-11)=14*y**2-22*y"})
  second = scoring.score(pairs[:1], ["2*k**2-k-435"])
  (tmp_path / "a.json").write_text(json.dumps(first))
  (tmp_path / "b.json").write_text(json.dumps(second))
  result = subprocess.run([sys.executable, "scripts/eval_table.py", f"real={tmp_path / 'a.json'}",
                           f"generated={tmp_path / 'b.json'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      "| lines | real | generated |",
      "| --- | --- | --- |",
      "| all lines | 0.6667 (3) | 1.0000 (1) |",
      "| (a*u+b)*(c*u+d) | 0.5000 (2) | 1.0000 (1) |",
      "| k*u*(c*u+d) | 1.0000 (1) |  |",
      "| (a*u+b)*(c*u+d), abs(a*d+b*c): 1-9 | 0.5000 (2) | 1.0000 (1) |",
      "| seen in training | 1.0000 (1) |  |",
      "| not seen in training | 0.5000 (2) |  |",
      "| k*u*(c*u+d), seen | 1.0000 (1) |  |",
      "| (a*u+b)*(c*u+d), unseen | 0.5000 (2) |  |",
      "| failures: linear coefficient wrong | 1 | 0 |",
  ]
  bad = subprocess.run([sys.executable, "scripts/eval_table.py", "no-label"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "expected LABEL=PATH" in bad.stderr


def test_eval_table_has_a_row_for_lines_whose_linear_term_cancels(tmp_path):
  from polyflax import scoring  # pylint: disable=import-outside-toplevel
  pairs = [("(19-5*h)*(5*h+19)", "361-25*h**2"), ("(x+3)*(2*x-6)", "2*x**2-18"),
           ("(k-15)*(2*k+29)", "2*k**2-k-435")]
  metrics = scoring.score(pairs, ["361-25*h**2", "2*x**2-x-18", "2*k**2-k-435"])
  (tmp_path / "a.json").write_text(json.dumps(metrics))
  result = subprocess.run([sys.executable, "scripts/eval_table.py", f"real={tmp_path / 'a.json'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert "| linear term cancels (a*d+b*c=0) | 0.5000 (2) |" in result.stdout.splitlines()


def test_eval_table_has_rows_for_the_linear_coefficients_size_in_bin_order(tmp_path):
  from polyflax import scoring  # pylint: disable=import-outside-toplevel
  # abs(a*d+b*c): 0, 122, 1, 400, 300; (x+3)*(2*x-6) cancels and is predicted wrong.
  pairs = [("(x+3)*(2*x-6)", "2*x**2-18"), ("(21-t)*(-6*t-4)", "6*t**2-122*t-84"),
           ("(k-15)*(2*k+29)", "2*k**2-k-435"), ("(25-9*x)*(7*x-25)", "-63*x**2+400*x-625"),
           ("(-7*k-29)*(-6*k-18)", "42*k**2+300*k+522"), ("2*y*(7*y-11)", "14*y**2-22*y")]
  predictions = [expanded for _, expanded in pairs]
  predictions[0] = "2*x**2-x-18"
  (tmp_path / "a.json").write_text(json.dumps(scoring.score(pairs, predictions)))
  result = subprocess.run([sys.executable, "scripts/eval_table.py", f"real={tmp_path / 'a.json'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  cancels = lines.index("| linear term cancels (a*d+b*c=0) | 0.0000 (1) |")
  assert lines[cancels + 1:cancels + 6] == [
      "| (a*u+b)*(c*u+d), abs(a*d+b*c): 0 | 0.0000 (1) |",
      "| (a*u+b)*(c*u+d), abs(a*d+b*c): 1-9 | 1.0000 (1) |",
      "| (a*u+b)*(c*u+d), abs(a*d+b*c): 10-299 | 1.0000 (1) |",
      "| (a*u+b)*(c*u+d), abs(a*d+b*c): 300-399 | 1.0000 (1) |",
      "| (a*u+b)*(c*u+d), abs(a*d+b*c): >=400 | 1.0000 (1) |"]
  assert all(line.count("|") == 3 for line in lines)  # one label and one column: no stray bar


def test_eval_table_shows_exact_match_by_confidence_and_what_the_threshold_flags(tmp_path):
  from polyflax import evaluate, scoring  # pylint: disable=import-outside-toplevel
  pairs = [("(k-15)*(2*k+29)", "2*k**2-k-435"), ("(17-2*i)*(i+8)", "-2*i**2+i+136"),
           ("2*y*(7*y-11)", "14*y**2-22*y")]
  predictions = ["2*k**2-k-435", "-2*i**2+3*i+136", "14*y**2-22*y"]
  flagged = scoring.score(pairs, predictions)
  flagged.update(evaluate.confidence_metrics([0.99999, 0.6, 0.95], [True, False, True], 0.97))
  unflagged = scoring.score(pairs[:1], predictions[:1])
  unflagged.update(evaluate.confidence_metrics([0.995], [True], None))
  (tmp_path / "a.json").write_text(json.dumps(flagged))
  (tmp_path / "b.json").write_text(json.dumps(unflagged))
  result = subprocess.run([sys.executable, "scripts/eval_table.py", f"cpu={tmp_path / 'a.json'}",
                           f"old={tmp_path / 'b.json'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for row in ("| confidence 0.5-0.9 | 0.0000 (1) |  |",
              "| confidence 0.9-0.99 | 1.0000 (1) |  |",
              "| confidence 0.99-0.999 |  | 1.0000 (1) |",
              "| confidence 0.9999-1 | 1.0000 (1) |  |",
              "| flagged: confidence below the model's threshold | 2 (66.67%) |  |",
              "| flagged: wrong answers | 1 of 1 (100.0%) |  |"):
    assert row in lines, lines
  assert lines[-1] == "| failures: linear coefficient wrong | 1 | 0 |"


def test_training_time_adds_up_sessions_and_counts_repeated_steps(tmp_path):
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  # Session 1 logs steps 0..1000 over an hour; session 2 resumes at 800
  # (200 steps trained again) and logs to 2000 over half an hour.
  for suffix, steps, start in ((".1", range(0, 1001, 200), 1000.0),
                               (".2", range(800, 2001, 200), 9000.0)):
    with SummaryWriter(str(tmp_path), filename_suffix=suffix) as writer:
      first = steps[0]
      for step in steps:
        wall = start + (step - first) * (3600.0 if suffix == ".1" else 1800.0) / (steps[-1] - first)
        writer.add_scalar("train/loss", 1.0, step, walltime=wall)
      writer.add_scalar("val/loss", 1.0, steps[-1], walltime=start + 99999)  # not training
  result = subprocess.run([sys.executable, "scripts/training_time.py", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].endswith(": steps 0 to 1,000, 1.00 h")
  assert lines[1].endswith(": steps 800 to 2,000, 0.50 h")
  assert lines[2] == "total: 1.50 h in 2 sessions, to step 2,000 (about 200 steps trained twice after resumes)"
  empty = subprocess.run([sys.executable, "scripts/training_time.py", str(tmp_path / "none")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
  assert empty.returncode == 1 and "no training events" in empty.stderr
