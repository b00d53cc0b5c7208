"""The XLA flag of the tests' processes: LLVM's optimisation at level 2, below XLA's default.

conftest.py sets it for the tests and every subprocess they start, and
tests/multihost_run.py for its processes. Most of the suite's time is
compiling the tiny model's programs once and running their steps a few
dozen times: level 2 compiles them about as fast as level 0 and runs them
nearly as fast as the default, where level 0 runs them several times slower
(docs/testing.md, "XLA's optimisation level", has the figures).
"""

TEST_OPTIMISATION = "--xla_backend_optimization_level=2"
