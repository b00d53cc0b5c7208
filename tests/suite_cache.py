"""The tests' compilation cache: one folder, kept from one run of the suite to the next.

conftest.py points JAX_COMPILATION_CACHE_DIR at it for the tests and every
subprocess they start, unless that variable is set already. A run then
loads the programs an earlier run compiled instead of compiling them again;
only programs whose code changed are compiled anew (docs/testing.md, "The
tests' compilation cache", has the figures). jax keys each entry by the
program, the jax version, the XLA flags and the device, so an entry of
other code is never used, only left behind.

The folder is `tests-jax` beside the program's own cache
(polyflax/compile_cache.py: $XDG_CACHE_HOME/polyflax, by default
~/.cache/polyflax), apart from it: the tests compile at another XLA level
(xla_flags.py) and keep every program, however quick to compile. It is
per user, like the program's, because jax runs what it loads from it.
jax never prunes it, so `prune` does, when a session starts.

This module imports nothing that imports jax: conftest.py uses it before
jax is first imported, when the variable still takes effect.
"""

from __future__ import annotations

import os

FOLDER_NAME = "tests-jax"
# Past this size a session's start removes the entries used least recently
# until PRUNED_BYTES are left; docs/testing.md says how much one version of
# the code fills.
MAX_BYTES = 1 << 30
PRUNED_BYTES = 1 << 29


def folder() -> str:
  """$XDG_CACHE_HOME/polyflax/tests-jax, by default ~/.cache/polyflax/tests-jax."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "polyflax", FOLDER_NAME)


def prune(path: str, max_bytes: int = MAX_BYTES, pruned_bytes: int = PRUNED_BYTES) -> int:
  """Removes the entries used least recently once `path` holds over `max_bytes`.

  Removes files until at most `pruned_bytes` are left; returns how many. An
  entry's last use is its access time where the filesystem keeps one (within
  a day, under Linux's default `relatime`), else when it was written. A
  suite running at the same time that misses a removed entry compiles it again.
  """
  files = []
  for entry in os.scandir(path):
    if entry.is_file(follow_symlinks=False):
      stat = entry.stat(follow_symlinks=False)
      files.append((max(stat.st_atime, stat.st_mtime), stat.st_size, entry.path))
  total = sum(size for _, size, _ in files)
  if total <= max_bytes:
    return 0
  removed = 0
  for _, size, file_path in sorted(files):
    if total <= pruned_bytes:
      break
    try:
      os.remove(file_path)
    except FileNotFoundError:  # another session removed it first
      pass
    total -= size
    removed += 1
  return removed
