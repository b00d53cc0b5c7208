"""Shared test fixtures."""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Real lines of the original dataset live beside the checkout, never inside it.
REAL_DEV = pathlib.Path(
    os.environ.get("POLYFLAX_REAL_DEV", REPO_ROOT.parent / "shared" / "data" / "real_dev.txt"))


@pytest.fixture(scope="session")
def real_dev_lines():
  """The real `factored=expanded` lines (read-only, for fidelity tests and evaluation only)."""
  if not REAL_DEV.exists():
    pytest.skip(f"real lines not found at {REAL_DEV}")
  with open(REAL_DEV, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]
