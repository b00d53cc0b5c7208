"""Every experiment config loads as main.py loads it, passes the checks and fits the cap."""

import subprocess
import sys

import pytest

from polyflax import config_checks, config_files, model_setup, models
from polyflax import vocab as vocab_lib

CONFIG_DIR = config_files.REPO / "configs"
CONFIGS = sorted(path.name for path in CONFIG_DIR.glob("*.py") if path.name != "__init__.py")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_checks_and_fits_the_parameter_cap(name):
  config = config_files.load(CONFIG_DIR / name)
  config_checks.check_config(config)
  model_cfg = model_setup.model_config(config, vocab_lib.Vocab.default().size)
  _, params = model_setup.abstract_model(model_cfg)
  count = models.count_params(params)
  assert count <= config.max_params == 5_000_000
  config_checks.check_param_count(count, config)


def test_the_reference_runs_and_the_recipes_say_what_they_are():
  red = config_files.load(CONFIG_DIR / "default.py")
  orange = config_files.load(CONFIG_DIR / "orange.py")
  assert (red.batch_size, orange.batch_size) == (512, 256)
  assert red.constant_per_batch == orange.constant_per_batch == "examples"
  assert red.train_data == "split" and red.max_epochs == 10 and red.max_steps == 0
  for name in ("best", "cpu"):
    recipe = config_files.load(CONFIG_DIR / f"{name}.py")
    assert recipe.train_data == "generated"
    assert recipe.model.dropout_rate == 0.0
  # best: as many steps as fit the GPU budget; cpu: 5 whole epochs of fresh lines.
  assert config_files.load(CONFIG_DIR / "best.py").max_steps > 0
  cpu = config_files.load(CONFIG_DIR / "cpu.py")
  assert (cpu.max_epochs, cpu.max_steps, cpu.batch_size) == (5, 0, 64)


def test_main_help_lists_every_config_in_a_line_of_its_own():
  result = subprocess.run([sys.executable, "main.py", "--help"], cwd=config_files.REPO,
                          capture_output=True, text=True, timeout=120, check=False)
  lines = result.stdout.splitlines()
  for name in CONFIGS:
    assert sum(line.startswith(f"  {name}  ") for line in lines) == 1, name
  # Each example command is whole: a continued line ends with a backslash.
  commands = [line for line in lines if line.startswith("  python main.py")]
  assert len(commands) >= 5 and all(line.count("--mode") <= 1 for line in commands)
  assert any(line.endswith("\\") for line in commands)
