"""The bfloat16 path a GPU takes (compute_dtype='auto'), run on the CPU.

Training and decoding in bfloat16 keep the parameters, layer norms, softmax
and loss in float32; only the matrix products are in bfloat16. So a tiny run
in bfloat16 must follow the same run in float32 closely. The shipped model
scores the same in either: tests/test_shipped_model.py.
"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax
from checkpoint_files import read_arrays

from polyflax import events

# Every test here trains or decodes at length (see pytest.ini).
pytestmark = pytest.mark.slow

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# The largest relative difference allowed between the bfloat16 and float32
# runs, at every logged training loss and every validation loss.
# bfloat16 keeps 8 bits of mantissa: one rounding is up to 2**-8 = 0.39%
# relative. With products in bfloat16 and sums in float32, the measured gap
# of this test's run (and of the same run at seeds 1 and 2) was at most
# 0.050% over 70 steps (17 training and 4 validation points each).
# Broken paths measured on the same run: the loss computed in bfloat16 drifts
# 0.43% (training) and 0.28% (validation); parameters rounded to bfloat16
# after each update (updates of lr * 1e-3 get lost) drift 2.4% and 2.9%.
# 0.2% is four times the largest gap measured and below both broken paths.
RELATIVE_TOLERANCE = 0.002


def _losses(workdir):
  scalars = events.read_scalars(workdir)
  return ([value for _, value in events.latest_by_step(scalars["train/loss"])],
          [value for _, value in events.latest_by_step(scalars["val/loss"])])


def train_in_float32_and_in_bfloat16(folder):
  """{dtype: workdir} of one tiny run in each, trained by main.py side by side.

  Each run generates the same data (3,000 lines, seed 0) in a folder of its own.
  """
  processes = {}
  for dtype in ("float32", "bfloat16"):
    with open(folder / f"{dtype}.log", "w", encoding="utf-8") as log:
      processes[dtype] = forked_python.Popen(
          [sys.executable, "main.py", "--config", "configs/tiny.py",
           "--workdir", str(folder / dtype), f"--config.data_dir={folder / f'data_{dtype}'}",
           "--config.generated_size=3000", "--config.max_epochs=2",
           "--config.log_every_steps=5", f"--config.compute_dtype={dtype}"],
          cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
  for dtype, process in processes.items():
    status = process.wait(timeout=600)
    assert status == 0, f"{dtype}: {(folder / f'{dtype}.log').read_text()[-3000:]}"
  return {dtype: folder / dtype for dtype in processes}


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {"float32 and bfloat16": train_in_float32_and_in_bfloat16}


def test_a_tiny_run_trains_in_bfloat16_as_in_float32(background_runs):
  workdirs = background_runs["float32 and bfloat16"].result()
  runs = {dtype: _losses(workdir) for dtype, workdir in workdirs.items()}
  # The parameters and the optimizer state stay float32 in the checkpoint.
  last = max(int(name) for name in os.listdir(workdirs["bfloat16"] / "checkpoints")
             if name.isdigit())
  state = read_arrays(workdirs["bfloat16"] / "checkpoints" / str(last) / "state")
  assert {leaf.dtype for leaf in jax.tree.leaves(state)
          if np.issubdtype(leaf.dtype, np.floating)} == {np.dtype(np.float32)}

  (train_32, val_32), (train_16, val_16) = runs["float32"], runs["bfloat16"]
  assert len(train_16) == len(train_32) == 17 and len(val_16) == len(val_32) == 4
  # The loss falls in bfloat16: from ln(vocabulary) or so to well under it.
  assert train_16[-1] < 0.7 * train_16[0]
  assert val_16[-1] < val_16[0]
  gaps = [abs(low - full) / full
          for low, full in zip(train_16 + val_16, train_32 + val_32)]
  assert max(gaps) <= RELATIVE_TOLERANCE, gaps
  # And the run did compute in bfloat16 from its first step: the same
  # program in float32 on the CPU gives identical losses.
  assert gaps[0] > 0 and max(gaps) > 0
