"""The GPU script's rehearsal (tiny configs on the CPU) and its summary table."""

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
