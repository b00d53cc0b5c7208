"""scripts/gpu_runs.sh and the Python behind it: the plan, the commands' limits, the rehearsal."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import time

import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax.events import read_scalars

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_script(name):
  """scripts/NAME.py as the module NAME, once: the GPU scripts import each other by that name."""
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


@pytest.fixture(scope="module")
def gpu_runs():
  """scripts/gpu_runs.py, after the two modules it imports."""
  load_script("gpu_plan")
  load_script("gpu_call")
  return load_script("gpu_runs")


def run_script(runs, out, *arguments):
  # The script and its commands forked from the tests' server (tests/forked_python.py).
  env = dict(os.environ, PYTHON=forked_python.interpreter())
  env.pop("GPU_RUNS_FAIL", None)
  return subprocess.run(["bash", "scripts/gpu_runs.sh", "--rehearse", "--runs", str(runs),
                         "--out", str(out), "--real", str(REPO / "tests" / "no_such_file"),
                         *arguments],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=900)


def plan(*arguments):
  return subprocess.run(["bash", "scripts/gpu_runs.sh", "--plan", *map(str, arguments)],
                        cwd=REPO, capture_output=True, text=True, timeout=60,
                        env=dict(os.environ, PYTHON=forked_python.interpreter()))


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
  result = plan("--runs", runs)
  assert result.returncode == 0, result.stderr
  assert not runs.exists()
  rows = plan_rows(result.stdout)
  assert sorted(rows) == [1, 2]
  for call, budget in ((1, 520), (2, 225)):
    assert f"call {call}: ends within {budget} s" in result.stdout
    # Every stage ends by the 40 s kept for the summary, which ends with the call.
    assert all(end <= budget - 40 for _, end, stage in rows[call] if stage != "summary")
    assert rows[call][-1] == (budget - 40, budget, "summary")
  # On the times of the first lease, call 1 runs the smoke test, then red until the deadline.
  stages = [stage for _, _, stage in rows[1]]
  assert stages == ["set-up", "smoke", "red", "summary"]
  assert "trains ~" in result.stdout and "the next call resumes it" in result.stdout
  assert "estimate" in result.stdout

  # Stages done in the runs folder are left out of the plan.
  runs.mkdir()
  (runs / "red").mkdir()
  for name in ("smoke.done", "red.done", "red/trained"):
    (runs / name).touch()
  again = plan("--runs", runs)
  assert "smoke: done before, skipped" in again.stdout
  assert [stage for _, _, stage in plan_rows(again.stdout)[1]][1:3] == ["export_red", "decode"]


def test_plan_rows_take_their_seconds_from_the_stage_table(gpu_runs, tmp_path):
  """Each stage's row lasts its start-up, training and evaluations in STAGES, one after another."""
  result = plan("--rehearse", "--runs", tmp_path / "runs")
  rows = plan_rows(result.stdout)[1]
  t = gpu_runs.REHEARSAL.setup
  assert rows[0] == (0, t, "set-up")
  least, most = gpu_runs.REHEARSAL.best_seconds
  for stage, (start, end, name) in zip(gpu_runs.STAGES, rows[1:]):
    expected = stage.rehearsal
    training = most if stage.kind == "best" else expected.train
    seconds = expected.bench + expected.start + training + expected.after
    assert (start, end, name) == (t, t + seconds, stage.name)
    t = end
  assert f"for {least}-{most} s" in result.stdout


def test_a_training_cut_by_the_deadline_resumes_in_the_next_call(gpu_runs, tmp_path):
  gpu_plan = gpu_runs.gpu_plan
  expected = {"red": gpu_plan.Expected("red", start=30, train=300, after=50)}
  stages = [gpu_plan.Stage("red", "train", None, expected["red"], expected["red"])]
  lines = gpu_plan.plan(gpu_runs.GPU, stages, expected, ["red"], [], tmp_path, [200, 500], 1)
  rows = plan_rows("\n".join(lines))
  # 140 s of work in call 1: 30 s of start-up, then 110 s of training, stopped.
  assert rows[1][1] == (20, 160, "red")
  assert "trains ~110 s of ~300, then SIGTERM" in lines[3]
  # Call 2 pays the start-up again, trains the 190 s left and evaluates.
  assert rows[2][1] == (20, 20 + 30 + 190 + 50, "red")
  assert "resumed (~190 s of training)" in "\n".join(lines)
  assert "every stage is expected to be done in these calls" in lines


def test_errors_a_user_can_make_are_one_line_and_status_2():
  for arguments, message in ((["--call", "3"], "error: --call takes 1 or 2, not '3'"),
                             (["--budget", "1.5"], "error: --budget takes whole seconds"),
                             (["--fail", "nosuch"], "error: --fail nosuch is not a stage"),
                             (["nosuch"], "error: unknown argument nosuch (stages: smoke red"),
                             (["--nosuch"], "error: unknown argument --nosuch")):
    result = plan(*arguments)
    assert result.returncode == 2, arguments
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def make_call(gpu_runs, tmp_path, budget=600):
  gpu_call = gpu_runs.gpu_call
  runs = tmp_path / "runs"
  (runs / "logs").mkdir(parents=True)
  call = gpu_call.Call(machine=gpu_runs.REHEARSAL, expected={}, runs=runs, out=tmp_path / "out",
                       exports=runs / "checkpoints", real="", number=1, budget=budget,
                       python=sys.executable, env=dict(os.environ),
                       fail=frozenset())
  call.stage, call.stage_log = "decode", runs / "logs" / "decode.log"
  return gpu_call, call


def test_a_command_logs_its_output_without_progress_and_prints_it_without_examples(
    gpu_runs, tmp_path, capsys):
  gpu_call, call = make_call(gpu_runs, tmp_path)
  script = ("import sys; sys.stdout.write('train: 10%\\rtrain: 100%\\n\\nInput: (t+1)**2\\n"
            "exact match 1.0\\r\\n'); sys.stdout.write('no newline')")
  logged = call.part("decode", "bench", 60, [sys.executable, "-c", script])
  assert logged == ["Input: (t+1)**2", "exact match 1.0", "no newline"]
  assert call.stage_log.read_text().splitlines()[1:] == logged
  printed = capsys.readouterr().out.splitlines()
  assert printed == ["exact match 1.0", "no newline"]
  ((part, seconds, status),) = [line.split("\t") for line in
                                (call.runs / "decode.calls").read_text().splitlines()]
  assert (part, status) == ("bench", "0") and re.fullmatch(r"\d+\.\d{3}", seconds)


def test_a_command_past_its_limit_fails_and_one_past_the_deadline_is_unfinished(
    gpu_runs, tmp_path, monkeypatch):
  gpu_call, call = make_call(gpu_runs, tmp_path)
  monkeypatch.setattr(gpu_call, "LEAST_COMMAND_SECONDS", 0)
  monkeypatch.setattr(gpu_call, "KILL_AFTER", 1)
  sleeper = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
  with pytest.raises(gpu_call.Failed):
    call.part("decode", "bench", 1, sleeper)
  # One that ignores SIGTERM is killed.
  stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
              "signal.SIG_IGN); print('started', flush=True); time.sleep(60)"]
  with pytest.raises(gpu_call.Failed):
    call.part("decode", "bench", 1, stubborn)
  # Stopped by the call's deadline (1 s of work left) rather than its own limit.
  call.started = time.time() - call.budget + gpu_runs.gpu_plan.END_MARGIN + 2
  with pytest.raises(gpu_call.Unfinished):
    call.part("decode", "bench", 60, sleeper)
  statuses = [line.split("\t")[2] for line in (call.runs / "decode.calls").read_text().splitlines()]
  assert statuses == ["124", "137", "124"]
  log = call.stage_log.read_text()
  assert "failed: bench ran past its limit of 1 s" in log
  assert "bench: stopped at the end of the call's work time" in log
  # With too little time left, nothing starts.
  monkeypatch.setattr(gpu_call, "LEAST_COMMAND_SECONDS", 10)
  with pytest.raises(gpu_call.Unfinished):
    call.part("decode", "bench", 60, sleeper)
  assert "bench: not started" in call.stage_log.read_text()
  assert len((call.runs / "decode.calls").read_text().splitlines()) == 3


def test_best_trains_for_the_time_left_at_the_measured_speed_or_waits(
    gpu_runs, tmp_path, monkeypatch):
  gpu_call, call = make_call(gpu_runs, tmp_path)
  call.stage, call.stage_log = "best", call.runs / "logs" / "best.log"
  call.machine = gpu_runs.GPU
  call.expected = {stage.name: stage.gpu for stage in gpu_runs.STAGES}
  (stage,) = [stage for stage in gpu_runs.STAGES if stage.name == "best"]
  (call.runs / "bench").mkdir()
  (call.runs / "bench" / "train_best.json").write_text(json.dumps({"steps_per_second": 12.5}))
  # After its bench, best keeps its start-up, its evaluations and its export.
  best = call.expected["best"]
  after = best.start + best.after + call.expected["export_best"].start
  monkeypatch.setattr(call, "remaining", lambda: after + 1000)
  gpu_runs.size_best(call, stage)
  steps = int((call.runs / "best.max_steps").read_text())
  assert steps == int(12.5 * 1000 * 0.9) // 100 * 100
  assert f"best: max_steps={steps} for 1000 s of training" in call.stage_log.read_text()
  assert gpu_runs.run_config(call, "best")[-1] == f"--config.max_steps={steps}"
  # Too little time left: skipped, to be tried again by the next call.
  monkeypatch.setattr(call, "remaining", lambda: after + 100)
  with pytest.raises(gpu_call.Skipped, match="100 s of training would be left, under its 120 s"):
    gpu_runs.size_best(call, stage)


@pytest.mark.slow  # trains in subprocesses
def test_rehearsal_contains_a_failure_summarises_and_skips_what_is_done(tmp_path):
  runs, out = tmp_path / "runs", tmp_path / "out"
  first = run_script(runs, out, "--fail", "smoke", "smoke", "red", "export_red")
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
  with tarfile.open(out / "results.tar.gz") as packed:
    assert {"red/trained", "red.calls", "stages.tsv", "logs/red.log", "smoke.failed"} <= set(
        packed.getnames())
  # The console, progress bars apart, is in gpu_runs.log too.
  assert "red: done in" in (out / "gpu_runs.log").read_text()

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


@pytest.mark.slow  # imports jax in subprocesses
def test_a_stage_whose_run_failed_is_skipped_with_the_reason(tmp_path):
  runs, out = tmp_path / "runs", tmp_path / "out"
  result = run_script(runs, out, "--fail", "red", "red", "export_red")
  assert result.returncode == 1
  summary = (out / "summary.md").read_text()
  assert "| red | failed (call 1) |" in summary
  assert ("| export_red | skipped (call 1) | 0 | red failed before its training finished |"
          in summary)
  assert "failed in this call: red" in result.stdout


def test_commands_import_polyflax_from_the_checkout_where_it_is_not_installed(
    gpu_runs, tmp_path, monkeypatch):
  # On the GPU machine polyflax is not installed: a bench script, whose sys.path holds
  # bench/ and not the checkout, must still import it. A package of that name on
  # PYTHONPATH that fails to import stands in for "not installed" here.
  shadow = tmp_path / "shadow" / "polyflax"
  shadow.mkdir(parents=True)
  (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
  monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
  env = gpu_runs.child_env(gpu_runs.REHEARSAL, tmp_path / "runs")
  ran = subprocess.run([sys.executable, "bench/bench_decode.py", "--help"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert ran.returncode == 0, ran.stderr
  assert "--methods" in ran.stdout
  found = subprocess.run([sys.executable, "-c", "import polyflax; print(polyflax.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert found.stdout.strip() == str(REPO / "polyflax" / "__init__.py"), found.stderr
