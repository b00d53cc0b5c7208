"""Holds a workdir's training lock as a run's processes do, until stdin closes (a test helper).

  python tests/hold_lock.py WORKDIR                        # one process
  python tests/hold_lock.py WORKDIR PROCESS_ID NUM_PROCESSES PORT   # one of several

Several processes join JAX's distributed runtime on localhost (a coordinator
on PORT, as tests/multihost_run.py does) and hold the lock together
(`run_lock.hold`). Each prints `held` once it holds it, then waits for its
standard input to close, and exits 0; or prints `refused: <the error line>`
and exits 2.
"""

import os
import sys

workdir = sys.argv[1]
process_id, num_processes, port = (map(int, sys.argv[2:5]) if len(sys.argv) > 2
                                   else (0, 1, 0))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=wrong-import-position

from polyflax import run_lock  # pylint: disable=wrong-import-position

if num_processes > 1:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=num_processes, process_id=process_id)
try:
  with run_lock.hold(workdir):
    print("held", flush=True)
    sys.stdin.read()
except run_lock.WorkdirInUse as error:
  print(f"refused: {error}", flush=True)
  sys.exit(2)
