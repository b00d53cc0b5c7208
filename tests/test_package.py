"""The installed `polyflax` command, `python -m polyflax` and `python main.py` are one command."""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# pip puts a package's commands beside the interpreter it installs into.
COMMAND = pathlib.Path(sys.executable).with_name("polyflax")

ENTRY_POINTS = {
    "main.py": [sys.executable, "main.py"],
    "python -m polyflax": [sys.executable, "-m", "polyflax"],
    "polyflax": [str(COMMAND)],
}


def _run(entry, *args):
  if entry == "polyflax" and not COMMAND.exists():
    pytest.fail(f"no {COMMAND}: install the package first (python -m pip install -e '.[test]')")
  return subprocess.run([*ENTRY_POINTS[entry], *args], cwd=REPO, capture_output=True, text=True,
                        timeout=120)


@pytest.mark.parametrize("entry", ["python -m polyflax", "polyflax"])
def test_every_entry_point_gives_main_py_help_and_errors(entry, tmp_path):
  for args in (["--help"],
               ["--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.no_such=1"]):
    expected, got = _run("main.py", *args), _run(entry, *args)
    assert (got.returncode, got.stdout, got.stderr) == (
        expected.returncode, expected.stdout, expected.stderr), args
  assert "Trains, evaluates or queries a polyflax model" in _run(entry, "--help").stdout
  assert "error: --config.no_such: no such field" in got.stderr and got.returncode == 2
