"""The config checks of the dense early validations (polyflax/config_checks.py)."""

import pytest

from polyflax import config_checks, config_files

DEFAULT = config_files.REPO / "configs" / "default.py"


def problems(**fields):
  """The problems `check_config` finds in configs/default.py with `fields` set ([]: none)."""
  config = config_files.set_fields(config_files.load(DEFAULT), fields)
  try:
    config_checks.check_config(config)
  except config_checks.ConfigError as error:
    heading, *found = str(error).split("\n  ")
    assert heading == "invalid config:"
    return found
  return []


def test_early_validation_is_off_by_default_and_takes_both_fields_together():
  config = config_files.load(DEFAULT)
  assert (config.val_early_every_examples, config.val_early_until_examples) == (0, 0)
  assert problems(val_early_every_examples=10_000, val_early_until_examples=300_000) == []
  assert problems(val_early_every_examples=300_000, val_early_until_examples=300_000) == []


@pytest.mark.parametrize("fields, message", [
    ({"val_early_every_examples": -1}, "val_early_every_examples must be an integer >= 0 (got -1)"),
    ({"val_early_until_examples": -5, "val_early_every_examples": 1},
     "val_early_until_examples must be an integer >= 0 (got -5)"),
    ({"val_early_every_examples": 10_000},
     "val_early_every_examples=10000 needs val_early_until_examples > 0, the training examples "
     "up to which to validate that often"),
    ({"val_early_until_examples": 300_000},
     "val_early_until_examples=300000 needs val_early_every_examples > 0, how many training "
     "examples apart to validate until then"),
    ({"val_early_every_examples": 20_000, "val_early_until_examples": 10_000},
     "val_early_every_examples=20000 is over val_early_until_examples=10000: no early "
     "validation would happen; lower it, or raise val_early_until_examples"),
])
def test_bad_early_validation_fields_are_said_in_one_line_each(fields, message):
  assert problems(**fields) == [message]
