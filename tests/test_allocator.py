"""polyflax/allocator.py: the command starts again under tcmalloc where it is installed."""

import os
import subprocess
import sys

import pytest

from polyflax import allocator
from polyflax import command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TCMALLOC = allocator.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None, reason="libtcmalloc_minimal not installed")

# What a program that calls use_tcmalloc first sees: its LD_PRELOAD, the
# allocator mapped in, and its arguments (which must survive the re-exec).
PROBE = """
import os, sys
from polyflax import allocator
allocator.use_tcmalloc()
print(repr(os.environ.get("LD_PRELOAD", "")))
print(repr(allocator.loaded_tcmalloc()))
print(repr(sys.argv[1:]))
"""


def _environment(**changes):
  env = {name: value for name, value in os.environ.items()
         if name not in ("LD_PRELOAD", allocator.SWITCH_VARIABLE, allocator.MARKER_VARIABLE)}
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  env.update(changes)
  return env


def _probe(tmp_path, **changes):
  script = tmp_path / "probe.py"
  script.write_text(PROBE)
  result = subprocess.run([sys.executable, str(script), "--flag", "a b"], capture_output=True,
                          text=True, env=_environment(**changes), cwd=tmp_path, check=True)
  preload, loaded, argv = (eval(line) for line in result.stdout.splitlines())  # pylint: disable=eval-used
  assert argv == ["--flag", "a b"]
  return preload, loaded


@needs_tcmalloc
def test_a_program_starts_again_under_tcmalloc(tmp_path):
  preload, loaded = _probe(tmp_path, LD_PRELOAD="libm.so.6")
  assert preload == f"{TCMALLOC}:libm.so.6"
  assert loaded and "tcmalloc" in loaded


@needs_tcmalloc
@pytest.mark.parametrize("off", ["0", "off"])
def test_the_switch_keeps_the_systems_malloc(tmp_path, off):
  assert _probe(tmp_path, **{allocator.SWITCH_VARIABLE: off}) == ("", None)


@needs_tcmalloc
def test_the_reexecuted_process_does_not_start_again(tmp_path):
  # The marker alone (LD_PRELOAD lost on the way) stops a second re-exec.
  assert _probe(tmp_path, **{allocator.MARKER_VARIABLE: "1"}) == ("", None)


def test_nothing_happens_without_the_library(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
  for name in ("LD_PRELOAD", allocator.SWITCH_VARIABLE, allocator.MARKER_VARIABLE):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
  allocator.use_tcmalloc()
  assert not calls
  assert "not found" in allocator.describe()
  monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "/lib/libtcmalloc_minimal.so.4")
  monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "polyflax", "--mode=predict"])
  allocator.use_tcmalloc()
  (executable, argv, env), = calls
  assert executable == sys.executable and argv == [sys.executable, "-m", "polyflax", "--mode=predict"]
  assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4"
  assert env[allocator.MARKER_VARIABLE] == "1"


def test_the_command_chooses_the_allocator_before_anything_else(monkeypatch):
  class Chosen(Exception):
    pass

  def choose():
    raise Chosen

  monkeypatch.setattr(allocator, "use_tcmalloc", choose)
  with pytest.raises(Chosen):
    command.run()


@pytest.mark.parametrize("switch", ["1", "0"])
def test_help_runs_with_and_without_tcmalloc(tmp_path, switch):
  result = subprocess.run([sys.executable, "-m", "polyflax", "--help"], capture_output=True,
                          text=True, env=_environment(**{allocator.SWITCH_VARIABLE: switch}),
                          cwd=REPO, check=False)
  # absl's --help exits with status 1 after printing the help.
  assert "Trains, evaluates or queries a polyflax model" in result.stdout, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert "tcmalloc" not in result.stderr
