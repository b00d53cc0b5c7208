"""tests/forked_python.py: the executable scripts get as PYTHON, forking from the session's server."""

import os
import select
import signal
import subprocess
import sys
import time

import forked_python  # tests/: subprocesses forked from one that has imported jax

# Prints its parent's and its own process id, then waits for a line on its input.
SCRIPT = """
import os, sys
print(os.getppid(), os.getpid(), flush=bool(sys.argv[1:]))
print("after the pids", file=sys.stderr)
sys.stdin.readline()
sys.exit(3)
"""


def _start(tmp_path, *args, env=None):
  script = tmp_path / "script.py"
  script.write_text(SCRIPT, encoding="utf-8")
  return subprocess.Popen([forked_python.interpreter(), str(script), *args], env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _first_line(stream, seconds=30.0):
  """The stream's first line, or None if none comes within `seconds`."""
  if not select.select([stream], [], [], seconds)[0]:
    return None
  return stream.readline()


def _gone(pid, seconds=30.0):
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    time.sleep(0.05)
  return False


def test_a_script_is_forked_from_the_server_and_ends_with_its_own_status(tmp_path):
  process = _start(tmp_path, "flush")
  parent, child = map(int, _first_line(process.stdout).split())
  assert parent != process.pid and child != process.pid  # a child of the server
  out, err = process.communicate("\n", timeout=60)
  assert process.returncode == 3 and err == "after the pids\n" and out == ""


# Ends as Python does: after its threads that are not daemons, and after
# threading's exit callbacks, which come before atexit's.
EXIT_SCRIPT = """
import atexit, threading, time
atexit.register(print, "atexit")
threading._register_atexit(print, "threading's exit callback")
def late():
  time.sleep(0.5)
  print("thread done", flush=True)
threading.Thread(target=late).start()
"""


def test_a_forked_script_ends_as_python_does(tmp_path):
  script = tmp_path / "exit.py"
  script.write_text(EXIT_SCRIPT, encoding="utf-8")
  outputs = [subprocess.run([python, str(script)], capture_output=True, text=True,
                            timeout=60).stdout
             for python in (sys.executable, forked_python.interpreter())]
  assert outputs[0] == "threading's exit callback\nthread done\natexit\n"
  assert outputs[1] == outputs[0]


def test_pythonunbuffered_writes_through_as_python_does(tmp_path):
  process = _start(tmp_path, env=dict(os.environ, PYTHONUNBUFFERED="1"))
  try:
    # Not flushed by the script: it comes before the script ends only if unbuffered.
    assert _first_line(process.stdout) is not None
  finally:
    process.communicate("\n", timeout=60)


def test_signals_go_on_to_the_command_and_its_death_is_the_interpreters(tmp_path):
  process = _start(tmp_path, "flush")
  _, child = map(int, _first_line(process.stdout).split())
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=60) == -signal.SIGTERM
  assert _gone(child)


def test_killing_the_interpreter_outright_kills_its_command(tmp_path):
  process = _start(tmp_path, "flush")
  _, child = map(int, _first_line(process.stdout).split())
  process.kill()
  process.wait(timeout=60)
  assert _gone(child)


def test_other_commands_and_environments_run_in_python_itself(tmp_path):
  command = [forked_python.interpreter(), "-c", "import os, sys; print(os.getppid(), sys.argv[1:])",
             "a b"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
  assert result.stdout == f"{os.getpid()} ['a b']\n"  # the interpreter became Python

  process = _start(tmp_path, "flush", env=dict(os.environ, JAX_ENABLE_X64="1"))
  parent, child = map(int, _first_line(process.stdout).split())
  assert (parent, child) == (os.getpid(), process.pid)
  process.communicate("\n", timeout=60)
  assert process.returncode == 3


def test_the_python_commands_of_a_forked_script_are_forked_too(tmp_path):
  outer = tmp_path / "outer.py"
  outer.write_text("import os, subprocess, sys\nprint(os.getppid(), flush=True)\n"
                   "sys.exit(subprocess.run([os.environ['PYTHON'], sys.argv[1], 'flush']).returncode)\n",
                   encoding="utf-8")
  (tmp_path / "script.py").write_text(SCRIPT, encoding="utf-8")
  process = subprocess.Popen([forked_python.interpreter(), str(outer), str(tmp_path / "script.py")],
                             env=dict(os.environ, PYTHON=forked_python.interpreter()),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  server = int(_first_line(process.stdout))
  parent, _ = map(int, _first_line(process.stdout).split())
  assert parent == server != os.getpid()  # both children of the server
  process.communicate("\n", timeout=60)
  assert process.returncode == 3
