"""What tests of faults share: the tiny config they train, main.py, and reading what a run left.

Every training run of these tests is the tiny config for one epoch of the
session's data folder (conftest.py): 23 steps, with validation (and so a
checkpoint) every 6 steps, at steps 6, 12, 18 and 23.
"""

import json
import os
import sys

import jax
import numpy as np
from checkpoint_files import read_arrays
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax import config_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 23  # 1,520 training examples in batches of 64, one epoch
OVERRIDES = {"generated_size": 2000, "max_epochs": 1, "val_check_interval": 0.25,
             "val_exact_match_examples": 0, "log_every_steps": 3}
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# A hang fails the test after this long (never a timing assertion).
PATIENCE_S = 600


def tiny_config(data_dir, **overrides):
  return config_files.tiny(data_dir, **dict(OVERRIDES, **overrides))


def run_main(*args, env=None):
  return forked_python.run([sys.executable, os.path.join(REPO, "main.py"), *map(str, args)],
                        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE_S,
                        env=None if env is None else dict(os.environ, **env))


def checkpoint_entries(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return os.listdir(directory) if os.path.isdir(directory) else []


def complete_steps(workdir):
  return sorted(int(name) for name in checkpoint_entries(workdir) if name.isdigit())


def leftover_tmp_dirs(workdir):
  return [name for name in checkpoint_entries(workdir) if TMP_SUFFIX in name]


def saved(workdir, step):
  """(state, extra) of a checkpoint, read straight from its files."""
  directory = os.path.join(workdir, "checkpoints", str(step))
  state = read_arrays(os.path.join(directory, "state"))
  with open(os.path.join(directory, "extra", "metadata"), encoding="utf-8") as f:
    return state, json.load(f)


def assert_finite(tree):
  for leaf in jax.tree.leaves(tree):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.floating):
      assert np.isfinite(leaf).all()


def one_error_line(stderr):
  """The `error: ...` line a user error prints, checking it is the only thing said."""
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert lines and lines[-1].startswith("error: "), stderr[-3000:]
  return lines[-1]
