"""One training run per workdir: a second run is refused at once, a dead holder never blocks."""

import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

import multihost_run  # tests/ is on the path (tests have no __init__.py)
from polyflax import cli, config_files, run_lock
from polyflax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD_LOCK = os.path.join(REPO, "tests", "hold_lock.py")
# A hang fails the test after this long (never a timing assertion).
PATIENCE_S = 600


def lock_content(workdir):
  with open(workdir_lib.lock_file(workdir), encoding="utf-8") as f:
    return f.read()


def test_a_held_workdir_refuses_another_holder_naming_the_first(tmp_path):
  lock = run_lock.Lock.acquire(str(tmp_path))
  held_by = json.loads(lock_content(tmp_path))
  assert (held_by["host"], held_by["pid"]) == (socket.gethostname(), os.getpid())
  # flock locks belong to an open file: a second open of it is a second holder.
  with pytest.raises(run_lock.WorkdirInUse) as refused:
    run_lock.Lock.acquire(str(tmp_path))
  message = str(refused.value)
  assert "\n" not in message
  assert message.startswith(f"{tmp_path} is in use by another training run (host "
                            f"{socket.gethostname()}, PID {os.getpid()}, since ")
  assert message.endswith("or train in another --workdir")
  lock.release()
  assert lock_content(tmp_path) == ""  # a clean end names no holder
  run_lock.Lock.acquire(str(tmp_path)).release()  # and blocks no one


def start_holder(workdir, *args):
  return forked_python.Popen([sys.executable, HOLD_LOCK, str(workdir), *map(str, args)], cwd=REPO,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def first_line(process):
  """The holder's answer: `held`, or `refused: ...` (gloo prints lines of its own)."""
  for line in process.stdout:
    if line.strip() == "held" or line.startswith("refused: "):
      return line.strip()
  process.wait(PATIENCE_S)
  pytest.fail(f"the holder said nothing (exit {process.returncode}): {process.stderr.read()}")


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path):
  holder = start_holder(tmp_path)
  try:
    assert first_line(holder) == "held"
    with pytest.raises(run_lock.WorkdirInUse, match=f"PID {holder.pid},"):
      run_lock.Lock.acquire(str(tmp_path))
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(PATIENCE_S)
    holder.stdout.close()
    holder.stderr.close()
    holder.stdin.close()
  # The file still names the dead process; the kernel let its lock go.
  assert json.loads(lock_content(tmp_path))["pid"] == holder.pid
  lock = run_lock.Lock.acquire(str(tmp_path))
  assert json.loads(lock_content(tmp_path))["pid"] == os.getpid()
  lock.release()


def start_processes(workdir, num_processes=2):
  port = multihost_run.free_port()
  return [start_holder(workdir, process_id, num_processes, port)
          for process_id in range(num_processes)]


def finish(processes):
  for process in processes:
    process.stdin.close()
  for process in processes:
    try:
      process.wait(PATIENCE_S)
    finally:
      if process.poll() is None:
        process.kill()
      process.stdout.close()
      process.stderr.close()


def test_the_processes_of_a_run_on_several_hosts_are_one_holder(tmp_path):
  processes = start_processes(tmp_path)
  try:
    assert [first_line(process) for process in processes] == ["held", "held"]
    assert json.loads(lock_content(tmp_path))["pid"] == processes[0].pid
  finally:
    finish(processes)
  # Another run's processes all stop when the workdir is held.
  lock = run_lock.Lock.acquire(str(tmp_path))
  processes = start_processes(tmp_path)
  try:
    lines = [first_line(process) for process in processes]
  finally:
    finish(processes)
    lock.release()
  held_by = f"(host {socket.gethostname()}, PID {os.getpid()}, since "
  assert lines[0].startswith(f"refused: {tmp_path} is in use by another training run {held_by}")
  assert lines[1].startswith(f"refused: process 0: {tmp_path} is in use by another training run "
                             f"{held_by}")
  assert [process.returncode for process in processes] == [2, 2]


# --- Two training runs at once ---------------------------------------------------------------

# The tiny config for one epoch: 23 steps, a checkpoint at steps 6, 12, 18 and 23.
OVERRIDES = {"generated_size": 2000, "max_epochs": 1, "val_check_interval": 0.25,
             "val_exact_match_examples": 16, "log_every_steps": 3}


def main_command(workdir, data_dir, program="main.py"):
  return ([sys.executable, os.path.join(REPO, program), "--config", "configs/tiny.py",
           "--workdir", str(workdir), f"--config.data_dir={data_dir}"]
          + [f"--config.{name}={value}" for name, value in OVERRIDES.items()])


@pytest.mark.slow  # trains in a subprocess
def test_a_second_run_is_refused_while_the_first_trains_on_and_evaluation_reads_it(tmp_path,
                                                                                   capsys):
  held = 14  # the first run holds step 14 until the test lets it go
  gate = tmp_path / "gate"
  gate.mkdir()
  workdir, data_dir = tmp_path / "run", tmp_path / "inputs"
  command = main_command(workdir, data_dir, "tests/held_step_main.py")
  command[2:2] = [str(held), str(gate)]
  with open(tmp_path / "first.out", "w") as out, open(tmp_path / "first.err", "w") as err:
    first = forked_python.Popen(command, cwd=REPO, stdout=out, stderr=err)
  try:
    deadline = time.monotonic() + PATIENCE_S
    while not (gate / "started").exists():
      if first.poll() is not None:
        pytest.fail((tmp_path / "first.err").read_text()[-3000:])
      if time.monotonic() > deadline:
        pytest.fail(f"step {held} did not start in {PATIENCE_S} s")
      time.sleep(0.01)
    before = sorted(os.listdir(workdir))
    second = forked_python.run(main_command(workdir, data_dir), cwd=REPO, capture_output=True,
                            text=True, timeout=PATIENCE_S)
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.strip().splitlines() == [
        f"error: {workdir} is in use by another training run (host {socket.gethostname()}, "
        f"PID {first.pid}, since {json.loads(lock_content(workdir))['since']}): wait for it to "
        "end or stop it, or train in another --workdir"]
    assert "compiling" not in second.stdout and "parameters" not in second.stdout
    assert sorted(os.listdir(workdir)) == before  # wrote nothing
    # Evaluation reads the best complete checkpoint of the run in progress.
    config = config_files.tiny(data_dir, **dict(OVERRIDES, **{"eval.limit": 32}))
    capsys.readouterr()
    assert cli.run("evaluate", config, str(workdir)) == 0
    evaluated = re.search(r"^evaluating .* \(step (\d+)\)", capsys.readouterr().out, re.M)
    assert evaluated and int(evaluated.group(1)) in (6, 12)
  finally:
    (gate / "go").touch()
    try:
      first.wait(PATIENCE_S)
    finally:
      if first.poll() is None:
        first.kill()
  assert first.returncode == 0, (tmp_path / "first.err").read_text()[-3000:]
  assert "training done: 23 steps" in (tmp_path / "first.out").read_text()
  assert len(glob.glob(str(workdir / "events.out.tfevents.*"))) == 1
  assert lock_content(workdir) == ""
