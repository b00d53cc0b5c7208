"""polyflax/command.py: the flags, --help, and a config that cannot be used as one line, status 2.

Every case runs the real command, through each of its entry points: `python
main.py`, `python -m polyflax` and the installed `polyflax`.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from polyflax import config_files

REPO = pathlib.Path(__file__).resolve().parents[1]
# pip puts a package's commands beside the interpreter it installs into.
COMMAND = pathlib.Path(sys.executable).with_name("polyflax")
ENTRY_POINTS = {
    "main.py": [sys.executable, "main.py"],
    "python -m polyflax": [sys.executable, "-m", "polyflax"],
    "polyflax": [str(COMMAND)],
}
CONFIGS = "(configs/ holds best.py, cpu.py, default.py, orange.py, tiny.py)"
HINT = "a config file is Python defining get_config(), as the files in configs/ do"


def run_command(entry, *args):
  if entry == "polyflax" and not COMMAND.exists():
    pytest.fail(f"no {COMMAND}: install the package first (python -m pip install -e '.[test]')")
  # The checkout's polyflax, whichever entry point: the installed command too.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  return subprocess.run([*ENTRY_POINTS[entry], *map(str, args)], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=env)


def _write(folder, name, text):
  path = folder / name
  path.write_text(text, encoding="utf-8")
  return path


# Each case: (the --config value, the one error line expected, or a pattern it must match).
def _unreadable_configs(tmp_path):
  syntax = _write(tmp_path, "syntax.py", "def get_config(:\n  return None\n")
  no_get_config = _write(tmp_path, "no_get_config.py", "batch_size = 8\n")
  raising = _write(tmp_path, "raising.py", 'def get_config():\n  raise ValueError("no\\ndata")\n')
  returns_none = _write(tmp_path, "returns_none.py", "def get_config():\n  pass\n")
  failing_import = _write(tmp_path, "failing_import.py", "import no_such_module\n")
  return {
      "syntax error": (syntax, f"error: --config {syntax}, line 1: not valid Python "
                               f"(invalid syntax); {HINT}"),
      "no get_config": (no_get_config,
                        f"error: --config {no_get_config}: defines no get_config(); {HINT}"),
      "get_config raises": (raising, f"error: --config {raising}, line 2: get_config() raised "
                                     "ValueError: no data"),
      "get_config returns None": (
          returns_none, f"error: --config {returns_none}: get_config() returned NoneType, not "
                        "an ml_collections.ConfigDict (no return statement?)"),
      "the file raises": (failing_import, f"error: --config {failing_import}, line 1: running the "
                                          "file raised ModuleNotFoundError: No module named "
                                          "'no_such_module'"),
      "not Python": ("README.md", re.compile(
          r"error: --config README\.md, line \d+: not valid Python \(.+\); " + re.escape(HINT))),
      "missing": ("configs/tiyn.py",
                  f"error: --config configs/tiyn.py: No such file or directory {CONFIGS}"),
      "a folder": (tmp_path, f"error: --config {tmp_path}: Is a directory {CONFIGS}"),
  }


CASES = ["syntax error", "no get_config", "get_config raises", "get_config returns None",
         "the file raises", "not Python", "missing", "a folder"]


@pytest.mark.parametrize("case", CASES)
def test_a_config_that_gives_no_config_is_one_error_line_from_every_entry_point(case, tmp_path):
  config, expected = _unreadable_configs(tmp_path)[case]
  workdir = tmp_path / "run"
  # An override too: ml_collections would apply it to the config it could not load.
  args = ["--config", config, "--workdir", workdir, "--config.batch_size=8"]
  results = {entry: run_command(entry, *args) for entry in ENTRY_POINTS}
  for entry, result in results.items():
    assert result.returncode == 2, (entry, result.stderr[-3000:])
    assert len(result.stderr.splitlines()) == 1, (entry, result.stderr[-3000:])
    line = result.stderr.rstrip("\n")
    if isinstance(expected, str):
      assert line == expected, entry
    else:
      assert expected.fullmatch(line), (entry, line)
    assert result.stdout == ""
  assert len({result.stderr for result in results.values()}) == 1
  assert not workdir.exists()


def test_config_load_refuses_a_file_that_gives_no_config_in_one_line(tmp_path):
  config, _ = _unreadable_configs(tmp_path)["get_config raises"]
  with pytest.raises(config_files.ConfigFileError) as raised:
    config_files.load(config)
  assert str(raised.value) == f"{config}, line 2: get_config() raised ValueError: no data"


def test_unknown_config_field_is_one_error_line(tmp_path):
  result = run_command("main.py", "--config", "configs/tiny.py", "--workdir", tmp_path / "run",
                       "--config.model.hidden_dm=64")
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      'error: --config.model.hidden_dm: no such field in the config (Did you mean "hidden_dim" '
      'instead of "hidden_dm"?); the --config file lists the fields']
  result = run_command("main.py", "--config", "configs/tiny.py", "--workdir", tmp_path / "run",
                       "--config.nonexistent=1")
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "error: --config.nonexistent: no such field in the config; the --config file lists the "
      "fields"]
  assert not os.path.exists(tmp_path / "run")


def test_a_config_with_arguments_passes_them_to_get_config(tmp_path):
  config = _write(tmp_path, "sized.py", "from configs import tiny\n\n\ndef get_config(size):\n"
                                        "  config = tiny.get_config()\n"
                                        "  config.batch_size = int(size)\n"
                                        "  return config\n")
  assert config_files.load(f"{config}:32").batch_size == 32
  with pytest.raises(config_files.ConfigFileError, match=r"get_config\(\) raised TypeError"):
    config_files.load(config)


# --- --help --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def help_text():
  result = run_command("main.py", "--help")
  assert "Traceback" not in result.stderr
  return result.stdout


def test_help_names_the_modes_and_the_flags_a_user_needs_first(help_text):
  for flag in ("--config FILE", "--config.FIELD=VALUE", "--workdir DIR", "--mode MODE",
               "--expr TEXT", "--tsv"):
    assert sum(line.startswith(f"  {flag} ") or line == f"  {flag}"
               for line in help_text.splitlines()) == 1, flag
  for mode in ("train", "evaluate", "predict", "export"):
    assert re.search(rf"^ +(--mode MODE +)?{mode}( \(default\))?: ", help_text, re.M), mode
  assert len(help_text.splitlines()) <= 50  # the rest is --helpfull's


# A figure a run measures: a duration, a speed or a score; each lives in docs/ only.
MEASURED = re.compile(r"\b\d+(\.\d+)?\s*(h|hours?|min|minutes?|s|seconds?)\b"
                      r"|\b(an?|one|two|three|few|under)\s+(hours?|minutes?|seconds?)\b"
                      r"|\bin seconds\b|steps/s|examples/s|\b0\.9\d+")


def test_help_texts_quote_no_measured_figure(help_text):
  full = run_command("main.py", "--helpfull").stdout
  own = full[full.index("polyflax.command:"):].split("\n\n")[0]  # the command's own flags
  assert "--mode" in own and "--config" in own
  for text in (help_text, own):
    assert not MEASURED.search(text), MEASURED.search(text)
  assert "docs/results.md" in help_text


# ---------------------------------------------------------------------------
# The installed `polyflax` command, `python -m polyflax` and `python main.py` are one command.


@pytest.mark.parametrize("entry", ["python -m polyflax", "polyflax"])
def test_every_entry_point_gives_main_py_help_and_errors(entry, tmp_path):
  for args in (["--help"],
               ["--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.no_such=1"]):
    expected, got = run_command("main.py", *args), run_command(entry, *args)
    assert (got.returncode, got.stdout, got.stderr) == (
        expected.returncode, expected.stdout, expected.stderr), args
  assert "Trains, evaluates or queries a polyflax model" in run_command(entry, "--help").stdout
  assert "error: --config.no_such: no such field" in got.stderr and got.returncode == 2
