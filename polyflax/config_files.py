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
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

import configs

# The folder holding polyflax/ and configs/: the checkout, or site-packages after `pip install .`.
REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = pathlib.Path(configs.__file__).resolve().parent
TINY_CONFIG = CONFIG_DIR / "tiny.py"


def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of a config file with `--config.FIELD=VALUE` overrides, as main.py reads it.

  Raises:
    flags.Error: for an override of the wrong type.
    AttributeError or KeyError: for an override of a field the config lacks.
  """
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
