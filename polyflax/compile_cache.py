"""jax's persistent compilation cache: compiled steps kept on disk between runs.

Every --mode calls `enable()` first, before anything compiles, so a resumed
run, a second evaluation or a prediction of shapes compiled before loads
them from disk instead of compiling them again.

Where it is, in this order:
  JAX_COMPILATION_CACHE_DIR=DIR    jax's own variable: that folder ('' turns the cache off)
  JAX_ENABLE_COMPILATION_CACHE=false   jax's own switch: off
  otherwise                        $XDG_CACHE_HOME/polyflax/jax, by default ~/.cache/polyflax/jax

The default is per user and outside every workdir: workdirs are copied,
exported and shipped (checkpoints/ is read as a workdir) and may sit on a
filesystem other users write to, while jax runs what it loads from its cache
(its documentation asks for a folder only trusted users can write). One
cache serves every workdir, so two runs of the same shapes share it. jax
never prunes it: delete the folder to reclaim the space. Its entries are
keyed by the program, the jax version and the device, so a stale entry is
never used, only left behind.
"""

from __future__ import annotations

import os
import sys

import jax

ENV_DIR = "JAX_COMPILATION_CACHE_DIR"
ENV_MIN_COMPILE_SECONDS = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
# Compilations shorter than this are not written (jax's default is 1 s); the
# decoder's and the eval step's shorter ones are worth keeping too.
MIN_COMPILE_SECONDS = 0.2


def default_directory() -> str:
  """$XDG_CACHE_HOME/polyflax/jax, or ~/.cache/polyflax/jax."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "polyflax", "jax")


def enable() -> str | None:
  """Turns the persistent compilation cache on, unless the environment says otherwise.

  Call it before the first compilation of the process; calling it again
  changes nothing. Returns the cache's folder, or None when it is off. A
  folder that cannot be made turns the cache off with a one-line warning:
  compiling still works, only slower.
  """
  if not jax.config.jax_enable_compilation_cache:
    return None
  if os.environ.get(ENV_DIR) == "":
    return None
  directory = jax.config.jax_compilation_cache_dir or default_directory()
  try:
    os.makedirs(directory, mode=0o700, exist_ok=True)
  except OSError as error:
    print(f"warning: compilation cache off: cannot make {directory} ({error.strerror}); "
          f"set {ENV_DIR} to another folder", file=sys.stderr)
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  if jax.config.jax_compilation_cache_dir != directory:
    jax.config.update("jax_compilation_cache_dir", directory)
  if ENV_MIN_COMPILE_SECONDS not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  return directory


def location() -> str:
  """Where compiled programs are kept, for a progress line: the folder, or 'off'."""
  if jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  return "off"
