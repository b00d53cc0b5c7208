"""Loading experiment config files as main.py does, for tests, benchmarks and scripts.

`load("configs/default.py", ["--config.batch_size=256"])` reads a config
file through ml_collections' `config_flags`, with the same `--config.FIELD`
overrides and the same locking as `main.py --config ...`, so a benchmark or a
test runs exactly the config a user would. `tiny` is the tiny config
(configs/tiny.py) on a data folder of its own, the one small config every
test and rehearsal builds on.

Config files build on each other with `from configs import default`: the
`configs` folder is a package installed beside `polyflax` (pyproject.toml),
so a config file in any folder can import it once the project is installed
(and `python main.py` finds it in its checkout without installing).

`check_file` reads a config file the way `config_flags` will, before it does,
so that a file that cannot be used (missing, a folder, not Python, no
`get_config`, a `get_config` that raises) is one `ConfigFileError` line
naming the file, and the line where that applies, instead of a traceback.
"""

from __future__ import annotations

import os
import pathlib
import traceback
import types
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

import configs

# The folder holding polyflax/ and configs/: the checkout, or site-packages after `pip install .`.
REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = pathlib.Path(configs.__file__).resolve().parent
TINY_CONFIG = CONFIG_DIR / "tiny.py"


class ConfigFileError(ValueError):
  """A config file that cannot be read or does not give a config: one line, naming the file."""


def _one_line(error: BaseException) -> str:
  """`Type: message` of an exception, its message's lines joined."""
  message = " ".join(str(error).split())
  return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _where(path: str, error: BaseException) -> str:
  """`path`, with the line of the innermost frame of `error` inside that file, if any."""
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if frame.filename == path]
  return f"{path}, line {lines[-1]}" if lines else path


def check_file(spec: str) -> None:
  """Raises ConfigFileError if the config file `spec` names gives no config.

  `spec` is the --config value: a path, or `path:ARGS` with ARGS passed to
  `get_config`, as `config_flags` reads it. The file is run and its
  `get_config` called, as `load` and main.py do next; config files only
  build a config, so running one twice changes nothing.
  """
  path, *args = spec.split(":", 1)
  try:
    with open(path, "rb") as f:
      source = f.read()
  except OSError as error:
    configs = sorted(p.name for p in CONFIG_DIR.glob("[!_]*.py"))
    raise ConfigFileError(f"{path}: {error.strerror} (configs/ holds {', '.join(configs)})"
                          ) from error
  hint = "a config file is Python defining get_config(), as the files in configs/ do"
  try:
    code = compile(source, path, "exec")
  except (SyntaxError, ValueError) as error:  # ValueError: a null byte (a binary file)
    line = getattr(error, "lineno", None)
    reason = getattr(error, "msg", None) or " ".join(str(error).split())
    where = f"{path}, line {line}" if line else path
    raise ConfigFileError(f"{where}: not valid Python ({reason}); {hint}") from error
  module = types.ModuleType(os.path.splitext(os.path.basename(path))[0])
  module.__file__ = path
  try:
    exec(code, module.__dict__)  # pylint: disable=exec-used
  except Exception as error:  # pylint: disable=broad-except
    raise ConfigFileError(f"{_where(path, error)}: running the file raised {_one_line(error)}"
                          ) from error
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigFileError(f"{path}: defines no get_config(); {hint}")
  try:
    config = get_config(*args)
  except Exception as error:  # pylint: disable=broad-except
    raise ConfigFileError(f"{_where(path, error)}: get_config({', '.join(map(repr, args))}) "
                          f"raised {_one_line(error)}") from error
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(f"{path}: get_config() returned {type(config).__name__}, not an "
                          "ml_collections.ConfigDict"
                          + (" (no return statement?)" if config is None else ""))


def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of a config file with `--config.FIELD=VALUE` overrides, as main.py reads it.

  Raises:
    ConfigFileError: for a file that gives no config (`check_file`).
    flags.Error: for an override of the wrong type.
    AttributeError or KeyError: for an override of a field the config lacks.
  """
  check_file(os.fspath(path))
  argv = ["load", f"--config={os.fspath(path)}", *overrides]
  flag_values = flags.FlagValues()
  # config_flags finds the override flags in the argv given at definition.
  config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                  flag_values=flag_values, lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def set_fields(config: ml_collections.ConfigDict, fields: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted fields (`{"model.hidden_dim": 48}`) of an existing config; returns it.

  A field the config lacks is a KeyError, as an unknown --config.FIELD is.
  """
  config.update_from_flattened_dict(dict(fields))
  return config


def tiny(data_dir: str | os.PathLike, **fields: Any) -> ml_collections.ConfigDict:
  """configs/tiny.py on `data_dir`, with dotted fields set (`**{"model.hidden_dim": 48}`)."""
  config = load(TINY_CONFIG)
  config.data_dir = os.fspath(data_dir)
  return set_fields(config, fields)
