"""The GPU script's rehearsal (tiny configs on the CPU), its summary table, and the evaluation table."""

import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile

import pytest

from polyflax.events import read_scalars

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_script(runs, out, *arguments):
  env = dict(os.environ, PYTHON=sys.executable)
  env.pop("GPU_RUNS_FAIL", None)
  return subprocess.run(["bash", "scripts/gpu_runs.sh", "--rehearse", "--runs", str(runs),
                         "--out", str(out), "--real", str(REPO / "tests" / "no_such_file"),
                         *arguments],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=900)


def plan_rows(text):
  """{call number: [(start, end, stage), ...]} of the rows of a printed plan."""
  rows, call = {}, None
  for line in text.splitlines():
    if line.startswith("call "):
      call = int(line.split()[1].rstrip(":"))
      rows[call] = []
    elif call and (match := re.match(r"\s+(\d+)\s+(\d+)\s+(\S+)", line)):
      rows[call].append((int(match[1]), int(match[2]), match[3]))
  return rows


def test_plan_fits_two_calls_in_order_of_value_and_starts_nothing(tmp_path):
  runs = tmp_path / "runs"
  result = subprocess.run(["bash", "scripts/gpu_runs.sh", "--plan", "--runs", str(runs)],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHON=sys.executable))
  assert result.returncode == 0, result.stderr
  assert not runs.exists()
  rows = plan_rows(result.stdout)
  assert sorted(rows) == [1, 2]
  for call, budget in ((1, 520), (2, 225)):
    assert f"call {call}: ends within {budget} s" in result.stdout
    # Every stage ends by the 40 s kept for the summary, which ends with the call.
    assert all(end <= budget - 40 for _, end, stage in rows[call] if stage != "summary")
    assert rows[call][-1] == (budget - 40, budget, "summary")
  stages = [stage for _, _, stage in rows[1]]
  assert stages[:5] == ["set-up", "smoke", "red", "export_red", "decode"]
  assert "estimate" in result.stdout

  # Stages done in the runs folder are left out of the plan.
  runs.mkdir()
  (runs / "red").mkdir()
  for name in ("smoke.done", "red.done", "red/trained"):
    (runs / name).touch()
  again = subprocess.run(["bash", "scripts/gpu_runs.sh", "--plan", "--runs", str(runs)],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHON=sys.executable))
  assert "smoke: done before, skipped" in again.stdout
  assert [stage for _, _, stage in plan_rows(again.stdout)[1]][1:3] == ["export_red", "decode"]


def rehearse(folder, *arguments):
  """(runs folder, output folder, result) of a rehearsal in `folder`."""
  runs, out = folder / "runs", folder / "out"
  return runs, out, run_script(runs, out, *arguments)


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {
    "smoke fails": lambda folder: rehearse(folder, "--fail", "smoke", "smoke", "red",
                                           "export_red"),
    "red fails": lambda folder: rehearse(folder, "--fail", "red", "red", "export_red"),
}


@pytest.mark.slow  # trains in subprocesses
def test_rehearsal_contains_a_failure_summarises_and_skips_what_is_done(background_runs):
  runs, out, first = background_runs["smoke fails"].result()
  # A stage failed: status 1, after every other stage ran and the summary came out.
  assert first.returncode == 1, first.stdout[-4000:] + first.stderr[-2000:]
  assert "smoke: FAILED" in first.stdout
  assert "red: done" in first.stdout and "export_red: done" in first.stdout
  summary = (out / "summary.md").read_text()
  assert re.search(r"^\| smoke \| failed \(call 1\) \| \d+ \| train exited with status 1; "
                   r"error: a failure injected into stage smoke \(--fail\) \|$", summary, re.M)
  assert "| red | done (call 1) |" in summary and "| export_red | done (call 1) |" in summary
  # The failed stage's log tail, in its own section.
  tail = summary.split("## smoke failed (call 1)")[1]
  assert "train of stage smoke: about to fail" in tail
  # The runs table's row of red (the stage table's has 4 cells).
  (red,) = [line for line in summary.splitlines()
            if line.startswith("| red ") and line.count("|") == 11]
  cells = [cell.strip() for cell in red.strip("|").split("|")]
  assert cells[1] == "70"  # 2 epochs of 35 steps
  # The training wall time is the script's timing of the training command; the
  # compile time, the run's own record of it, is part of that time.
  calls = [line.split("\t") for line in (runs / "red.calls").read_text().splitlines()]
  train_calls = [(float(seconds), status) for part, seconds, status in calls if part == "train"]
  assert [status for _, status in train_calls] == ["0"]
  ((train_seconds, _),) = train_calls
  compile_seconds = [value for _, value in read_scalars(runs / "red")["train/compile_seconds"]]
  assert len(compile_seconds) == 1
  assert cells[2] == f"{train_seconds:.0f}" and cells[3] == f"{compile_seconds[0]:.1f}"
  assert compile_seconds[0] < train_seconds
  assert cells[5].endswith("(600)")  # the whole tiny test split
  assert cells[6] == "-"  # no real lines given
  assert sorted(os.listdir(out)) == ["gpu_runs.log", "red.tar.gz", "results.tar.gz", "summary.md"]
  with tarfile.open(out / "red.tar.gz") as packed:
    assert "red/model.json" in packed.getnames()

  # No stage named: done stages are skipped, the failed one is not tried
  # again, and a budget that leaves no work time reaches nothing else.
  again = run_script(runs, out, "--budget", "45")
  assert again.returncode == 0, again.stdout[-4000:]
  assert "red: done before, skipped" in again.stdout
  assert "export_red: done before, skipped" in again.stdout
  assert "smoke: failed in an earlier call, not tried again" in again.stdout
  summary = (out / "summary.md").read_text()
  assert "| decode | not reached (call 2) |" in summary
  assert "## smoke failed (call 1)" in summary


@pytest.mark.slow  # trains in subprocesses
def test_a_stage_whose_run_failed_is_skipped_with_the_reason(background_runs):
  _, out, result = background_runs["red fails"].result()
  assert result.returncode == 1
  summary = (out / "summary.md").read_text()
  assert "| red | failed (call 1) |" in summary
  assert "| export_red | skipped (call 1) | 0 | red failed before its training finished |" in summary
  assert "failed in this call: red" in result.stdout


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
