"""The XLA flags of the tests' processes, and the environment that leaves them out.

conftest.py turns XLA's LLVM optimisation off for the tests and every
subprocess they start: most of the suite's time is compiling small programs
once, which this makes much faster. Decoding thousands of lines with
the shipped model is the exception, where the compiled code's speed shows:
the runs that do it get `optimised_environment()`, the flags users run with.
"""

import os

NO_LLVM_OPTIMISATION = "--xla_backend_optimization_level=0"


def optimised_environment() -> dict[str, str]:
  """os.environ with XLA_FLAGS less NO_LLVM_OPTIMISATION."""
  flags = os.environ.get("XLA_FLAGS", "").replace(NO_LLVM_OPTIMISATION, "").strip()
  return dict(os.environ, XLA_FLAGS=flags)
