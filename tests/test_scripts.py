"""The GPU script's rehearsal (tiny configs on the CPU), its summary table, and the evaluation table."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_script(runs, out, *stages):
  env = dict(os.environ, PYTHON=sys.executable)
  return subprocess.run(["bash", "scripts/gpu_runs.sh", "--rehearse", "--runs", str(runs),
                         "--out", str(out), "--real", str(REPO / "tests" / "no_such_file"),
                         *stages],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=900)


def test_rehearsal_trains_evaluates_summarises_and_skips_what_is_done(tmp_path):
  runs, out = tmp_path / "runs", tmp_path / "out"
  first = run_script(runs, out, "smoke", "red")
  assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
  assert "smoke: done" in first.stdout and "red: done" in first.stdout
  assert "stages left: bench best orange export" in first.stdout
  table = (out / "summary.md").read_text().splitlines()
  assert table[0].startswith("| run | steps | training wall s | of which compile s |")
  (red,) = [line for line in table if line.startswith("| red ")]
  cells = [cell.strip() for cell in red.strip("|").split("|")]
  assert cells[1] == "70"  # 2 epochs of 35 steps
  assert float(cells[2]) > 0 and float(cells[3]) > 0
  assert cells[5].endswith("(600)")  # the whole tiny test split
  assert cells[6] == "-"  # no real lines given
  assert sorted(os.listdir(out)) == ["gpu_runs.log", "results.tar.gz", "summary.md"]
  assert (runs / "red" / "eval" / "metrics.json").exists()

  again = run_script(runs, out, "smoke", "red")
  assert again.returncode == 0
  assert "smoke: done before, skipped" in again.stdout
  assert "red: done before, skipped" in again.stdout


def test_eval_table_puts_evaluations_side_by_side(tmp_path):
  from polyflax import evaluate  # pylint: disable=import-outside-toplevel
  pairs = [("(k-15)*(2*k+29)", "2*k**2-k-435"), ("(17-2*i)*(i+8)", "-2*i**2+i+136"),
           ("2*y*(7*y-11)", "14*y**2-22*y")]
  first = evaluate.score(pairs, ["2*k**2-k-435", "-2*i**2+3*i+136", "14*y**2-22*y"],
                         seen_lines={"2*y*(7*y-11)=14*y**2-22*y"})
  second = evaluate.score(pairs[:1], ["2*k**2-k-435"])
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
