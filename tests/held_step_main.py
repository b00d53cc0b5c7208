"""Runs main.py with one training step held on the device until a test lets it go (a test helper).

  python tests/held_step_main.py STEP GATE_DIR [main.py flags...]

The compiled training step gets a host callback after its update: the step
whose new state is step STEP writes GATE_DIR/started, then waits for
GATE_DIR/go to exist before it hands back its metric sums. A test can so
signal the process while step STEP is in flight, for as long as it needs,
with no timing involved; everything else is main.py unchanged.
"""

import os
import runpy
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=wrong-import-position
from jax.experimental import io_callback  # pylint: disable=wrong-import-position

from polyflax import steps  # pylint: disable=wrong-import-position

HELD_STEP = int(sys.argv.pop(1))
GATE_DIR = sys.argv.pop(1)
# Never hold a step longer than this, should the test be gone.
PATIENCE_S = 600
_train_step = steps.train_step


def _hold(step, sums):
  if int(step) == HELD_STEP:
    with open(os.path.join(GATE_DIR, "started"), "w", encoding="utf-8"):
      pass
    deadline = time.monotonic() + PATIENCE_S
    while not os.path.exists(os.path.join(GATE_DIR, "go")) and time.monotonic() < deadline:
      time.sleep(0.005)
  return sums


def _held_train_step(state, batch, **kwargs):
  state, sums = _train_step(state, batch, **kwargs)
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), sums)
  return state, io_callback(_hold, shapes, state.step, sums)


steps.train_step = _held_train_step  # experiment.build compiles steps.train_step

if __name__ == "__main__":
  sys.argv[0] = os.path.join(REPO, "main.py")
  runpy.run_path(sys.argv[0], run_name="__main__")
