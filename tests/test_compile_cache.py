"""The persistent compilation cache: where it is, how to move it and turn it off."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Turns the cache on as every --mode does, compiles one function and says where.
PROGRAM = """
import jax
from polyflax import compile_cache
directory = compile_cache.enable()
jax.jit(lambda x: x * 2 + 1)(jax.numpy.arange(3.0)).block_until_ready()
print(directory, compile_cache.location())
"""


def run(tmp_path, **env):
  """PROGRAM in a fresh process, with XDG_CACHE_HOME in `tmp_path` and `env` over os.environ."""
  environ = {name: value for name, value in os.environ.items()
             if name not in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE")}
  environ.update(XDG_CACHE_HOME=str(tmp_path / "user_cache"),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)
  result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def entries(directory):
  return os.listdir(directory) if os.path.isdir(directory) else []


def on_then_moved_then_off(tmp_path):
  """The cache in its default folder, then moved, then turned off two ways, checked at each."""
  default = tmp_path / "user_cache" / "polyflax" / "jax"
  assert run(tmp_path).stdout.split() == [str(default)] * 2
  assert entries(default)  # the compiled function was written

  moved = tmp_path / "elsewhere"
  assert run(tmp_path, JAX_COMPILATION_CACHE_DIR=str(moved)).stdout.split() == [str(moved)] * 2
  assert entries(moved)

  (tmp_path / "user_cache").rename(tmp_path / "old_cache")
  for off in ({"JAX_COMPILATION_CACHE_DIR": ""}, {"JAX_ENABLE_COMPILATION_CACHE": "false"}):
    assert run(tmp_path, **off).stdout.split() == ["None", "off"]
    assert not entries(default)


def cache_folder_under_a_file(tmp_path):
  """(the file in the way, PROGRAM's result) with the cache asked for in a folder under a file."""
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  return blocker, run(tmp_path, JAX_COMPILATION_CACHE_DIR=str(blocker / "jax"))


# Each runs fresh processes only: started when the session begins, beside the
# other tests (conftest.py).
BACKGROUND_RUNS = {"on, moved, off": on_then_moved_then_off,
                   "folder under a file": cache_folder_under_a_file}


def test_cache_is_on_in_the_users_cache_folder_and_can_be_moved_or_turned_off(background_runs):
  background_runs["on, moved, off"].result()


def test_a_cache_folder_that_cannot_be_made_turns_the_cache_off_with_a_warning(background_runs):
  blocker, result = background_runs["folder under a file"].result()
  assert result.stdout.split() == ["None", "off"]
  assert any(line.startswith(f"warning: compilation cache off: cannot make {blocker / 'jax'} ")
             for line in result.stderr.splitlines()), result.stderr
