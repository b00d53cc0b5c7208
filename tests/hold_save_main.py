"""Runs main.py with the commit of one checkpoint step held back (a test helper).

  python tests/hold_save_main.py STEP [main.py flags...]

Orbax writes a step into `<step>.orbax-checkpoint-tmp` and commits it by
renaming that folder to `<step>`. Here the rename of step STEP waits forever,
so a test can kill the process while that save is in flight; everything else
is main.py unchanged.
"""

import asyncio
import os
import runpy
import sys

from orbax.checkpoint._src.path import atomicity

HELD_STEP = sys.argv.pop(1)
_finalize = atomicity.AtomicRenameTemporaryPath.finalize


async def _held_finalize(self, *args, **kwargs):
  if self.get_final().name == HELD_STEP:
    await asyncio.sleep(3600)
  return await _finalize(self, *args, **kwargs)


atomicity.AtomicRenameTemporaryPath.finalize = _held_finalize

if __name__ == "__main__":
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.argv[0] = os.path.join(repo, "main.py")
  runpy.run_path(sys.argv[0], run_name="__main__")
