"""Shared test fixtures: the tiny config's data, one tiny run trained once per session,
and long subprocess runs started when the session begins, beside the tests."""

import atexit
import concurrent.futures
import fcntl
import os
import pathlib
import re
import shutil
import tempfile
from typing import NamedTuple

import pytest

import suite_cache
from xla_flags import TEST_OPTIMISATION

# One persistent compilation cache for the tests and the subprocesses they
# start, kept from one run of the suite to the next (tests/suite_cache.py):
# the tiny config's steps compile once, and a later run loads them. Set
# before jax is first imported; the workers inherit it. A folder named in
# JAX_COMPILATION_CACHE_DIR is used as it is: a fresh one times the suite
# as a new machine runs it. Where the user's cache folder cannot be made,
# this session keeps a folder of its own and removes it when it exits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  try:
    os.makedirs(suite_cache.folder(), mode=0o700, exist_ok=True)
    suite_cache.prune(suite_cache.folder())
    os.environ["JAX_COMPILATION_CACHE_DIR"] = suite_cache.folder()
  except OSError:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="polyflax-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's LLVM optimisation at level 2, here and in the subprocesses tests
# start (tests/xla_flags.py says why). A test that sets XLA_FLAGS for its
# subprocess (a device count) adds to these flags or sets its own.
if TEST_OPTIMISATION not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_OPTIMISATION}".strip()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Real lines of the original dataset live beside the checkout, never inside it;
# the subprocesses and background runs tests start read the same path.
REAL_DEV = pathlib.Path(
    os.environ.get("POLYFLAX_REAL_DEV", REPO_ROOT.parent / "shared" / "data" / "real_dev.txt"))
os.environ["POLYFLAX_REAL_DEV"] = str(REAL_DEV)

# The tiny config's data in every test that trains on it: 2,000 generated
# lines (seed 0), split into 1,520 training lines (23 steps of 64 an epoch),
# 80 validation lines and 400 test lines.
GENERATED_SIZE = 2000
DATA_SEED = 0

# Fixtures that train a model: every test that uses one (or a fixture built on
# one) is slow (see pytest.ini).
TRAINING_FIXTURES = {"tiny_run", "short_run", "rising_run", "runs"}


def pytest_collection_modifyitems(items):
  for item in items:
    if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _fork_server(tmp_path_factory):
  """The server the tests' Python subprocesses are forked from (tests/forked_python.py).

  It imports jax and the libraries once for the session. It runs under
  tcmalloc where the polyflax command would (polyflax/allocator.py). Beside
  its socket: the environment's start values it was started with, and the
  executable scripts get as PYTHON (forked_python.interpreter()).
  """
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import forked_python  # pylint: disable=g-import-not-at-top
  from polyflax import allocator  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("fork_server") / "socket"
  env = dict(os.environ)
  library = None if allocator.is_turned_off() else allocator.find_tcmalloc()
  if library and "tcmalloc" not in env.get("LD_PRELOAD", ""):
    env["LD_PRELOAD"] = ":".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    env[allocator.MARKER_VARIABLE] = "1"
  kept_names = ["LD_PRELOAD", allocator.MARKER_VARIABLE]
  forked_python.write_start_values(str(path), os.environ, env, kept_names)
  forked_python.write_interpreter(str(path))
  server = subprocess.Popen([sys.executable, forked_python.__file__, str(path), *kept_names],
                            env=env, stdout=subprocess.PIPE, text=True)
  assert server.stdout.readline() == "ready\n", "the fork server did not start"
  os.environ[forked_python.SERVER_VARIABLE] = str(path)
  yield
  del os.environ[forked_python.SERVER_VARIABLE]
  server.kill()
  server.wait()


@pytest.fixture(scope="session")
def real_dev_lines():
  """The real `factored=expanded` lines (read-only, for fidelity tests and evaluation only)."""
  if not REAL_DEV.exists():
    pytest.skip(f"real lines not found at {REAL_DEV}")
  with open(REAL_DEV, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def _files(folder: pathlib.Path) -> dict[str, tuple[int, int]]:
  """{relative path: (size, modification time)} of every file under `folder`."""
  return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
          for path in sorted(folder.rglob("*")) if path.is_file()}


def _unchanged(folder: pathlib.Path, before: dict[str, tuple[int, int]], what: str) -> None:
  """Fails the session's last user of a shared folder if a test wrote into it."""
  after = _files(folder)
  changed = sorted(name for name in before.keys() | after.keys()
                   if before.get(name) != after.get(name))
  assert not changed, (f"a test wrote into {what} {folder}, shared by the whole session "
                       f"(copy it first): {changed[:10]}")


def _shared_folder(tmp_path_factory, name: str, build) -> pathlib.Path:
  """The session's folder `name`, made once by `build(folder)` for every worker.

  Workers (pytest.ini) share the folder above their own temporary folders:
  the first worker to ask builds it while holding a lock, and the others wait
  for it and then read it.
  """
  root = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    root = root.parent
  path, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # what a worker that failed to build it left
      path.mkdir()
      build(path)
      done.touch()
  return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
  """The tiny config's generated data and its splits, shared: read it, never write into it.

  A config of the tiny config on this folder must keep generated_size=2000
  and data_seed=0, or preparing its data would rewrite the splits.
  """
  from polyflax import data  # after the environment above is set
  path = _shared_folder(tmp_path_factory, "inputs", lambda path: data.ensure_splits(
      path, DATA_SEED, generated_size=GENERATED_SIZE))
  before = _files(path)
  yield path
  _unchanged(path, before, "the data folder")


class TinyRun(NamedTuple):
  """A tiny run trained once for the whole test session: share it, never write into it."""
  config: "ml_collections.ConfigDict"  # configs/tiny.py on `data_dir`, one epoch of 2,000 lines
  data_dir: pathlib.Path  # its generated splits (the `data_dir` fixture)
  workdir: pathlib.Path  # its checkpoints (steps 12 and 23), events and run record


@pytest.fixture(scope="session")
def tiny_run(data_dir, tmp_path_factory) -> TinyRun:
  """One tiny run trained for one epoch, for every test that only reads a trained run.

  Trained by one worker for all of them (`_shared_folder`).

  configs/tiny.py as it is: validation (and a checkpoint) at steps 12 and 23,
  the last one the best. A test that changes the workdir (resumes it,
  damages a checkpoint, exports or evaluates into it) copies it first:
  the `tiny_run_copy` fixture.
  """
  from polyflax import config_files, train  # after the environment above is set
  config = config_files.tiny(data_dir, generated_size=GENERATED_SIZE, max_epochs=1)
  root = _shared_folder(tmp_path_factory, "tiny_run",
                        lambda root: train.train_and_evaluate(config, str(root / "run")))
  before = _files(root / "run")
  yield TinyRun(config, data_dir, root / "run")
  _unchanged(root / "run", before, "the tiny run's workdir")


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> pathlib.Path:
  """A copy of the tiny run's workdir in this test's tmp_path, for a test that changes it."""
  return pathlib.Path(shutil.copytree(tiny_run.workdir, tmp_path / "tiny_run"))


# --- Long runs of subprocesses, beside the tests -----------------------------------------
#
# Most tests keep one core busy. Some only check what runs of subprocesses
# leave (processes training together, the notebook run from top to bottom,
# the GPU script's rehearsal, main.py refusing a config): a test module names
# those runs in BACKGROUND_RUNS = {name: function(folder) -> result}, and its
# tests get their results from the `background_runs` fixture. The runs take
# turns in a thread of their own, so that they run beside the other tests
# instead of after them; a test then waits only for what is left of its run.
# In one process, the session starts the runs of every selected test's module
# when it begins. Under pytest-xdist (pytest.ini), a worker gets whole test
# files and cannot know which ahead: it starts a module's runs as the first of
# its tests begins.


@pytest.fixture(scope="session")
def _background():
  """The thread the long runs take turns in.

  The session's end (also one cut short, by -x) drops the runs not started
  and waits for the one going.
  """
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="background-run")
  yield pool
  pool.shutdown(wait=True, cancel_futures=True)


class _BackgroundRuns:
  """The session's long runs: each started once, in a folder of its own."""

  def __init__(self, pool, session, tmp_path_factory):
    self._pool = pool
    self._tmp_path_factory = tmp_path_factory
    # The modules whose selected tests get their runs, in the order the tests come.
    self.modules = list(dict.fromkeys(
        item.module for item in session.items
        if "background_runs" in getattr(item, "fixturenames", ())))
    self.futures = {}  # {(module name, run name): future}

  def start(self, module) -> None:
    """Starts the runs of `module` not started yet, if a selected test of it uses them."""
    if module not in self.modules:
      return
    for name, function in getattr(module, "BACKGROUND_RUNS", {}).items():
      key = (module.__name__, name)
      if key not in self.futures:
        folder = self._tmp_path_factory.mktemp(re.sub(r"\W+", "_", f"{module.__name__}_{name}"))
        self.futures[key] = self._pool.submit(function, folder)


@pytest.fixture(scope="session")
def _background_runs(request, _background, tmp_path_factory):
  runs = _BackgroundRuns(_background, request.session, tmp_path_factory)
  if "PYTEST_XDIST_WORKER" not in os.environ:
    for module in runs.modules:
      runs.start(module)
  return runs


@pytest.fixture(scope="module", autouse=True)
def _start_background_runs(request, _background_runs):
  """Starts the module's long runs, if the session has not (in one process, it has)."""
  _background_runs.start(request.module)


@pytest.fixture(scope="module")
def background_runs(request, _background_runs):
  """{name: future result} of the test module's BACKGROUND_RUNS."""
  _background_runs.start(request.module)
  module = request.module.__name__
  return {name: future for (owner, name), future in _background_runs.futures.items()
          if owner == module}
