"""Shared test fixtures."""

import os
import pathlib
import tempfile
from typing import NamedTuple

import pytest

# One persistent compilation cache for the whole test run, shared with the
# subprocesses tests start: the tiny config's steps then compile once.
# Set before jax is first imported.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="polyflax-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Real lines of the original dataset live beside the checkout, never inside it.
REAL_DEV = pathlib.Path(
    os.environ.get("POLYFLAX_REAL_DEV", REPO_ROOT.parent / "shared" / "data" / "real_dev.txt"))


# Fixtures that train a model: every test that uses one is slow (see pytest.ini).
TRAINING_FIXTURES = {"tiny_run", "exported", "trained", "reference", "rising_run", "runs",
                     "short_run"}


def pytest_collection_modifyitems(items):
  for item in items:
    if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def real_dev_lines():
  """The real `factored=expanded` lines (read-only, for fidelity tests and evaluation only)."""
  if not REAL_DEV.exists():
    pytest.skip(f"real lines not found at {REAL_DEV}")
  with open(REAL_DEV, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


class TinyRun(NamedTuple):
  """A tiny run trained once for the whole test session: share it, never write into it."""
  config: "ml_collections.ConfigDict"  # configs/tiny.py on `data_dir`, one epoch of 2,000 lines
  data_dir: pathlib.Path  # its generated splits
  workdir: pathlib.Path  # its checkpoints, events and run record


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
  """One tiny run trained for one epoch, for every test that only reads a trained run.

  A test that changes the workdir (resumes it, damages a checkpoint, exports
  into it) copies it first: `shutil.copytree(tiny_run.workdir, tmp_path / "run")`.
  """
  from polyflax import config_files, train  # after the environment above is set
  root = tmp_path_factory.mktemp("tiny_run")
  config = config_files.tiny(root / "inputs", generated_size=2000, max_epochs=1)
  train.train_and_evaluate(config, str(root / "run"))
  return TinyRun(config, root / "inputs", root / "run")
