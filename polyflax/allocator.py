"""tcmalloc as the process's allocator, where it is installed: re-executes under LD_PRELOAD.

Under glibc's malloc, XLA's CPU runtime maps and unmaps its buffers at every
step; tcmalloc keeps them, and training runs faster on a CPU
(docs/install.md, "Memory allocator"). The allocator is chosen when
a process starts, so the only way to switch is to start again: `use_tcmalloc`
re-executes the same command line with tcmalloc prepended to LD_PRELOAD, as
the CPU launchers of other frameworks do. It must run before anything has
been done worth keeping (the `polyflax` command and the benchmarks call it
first, before jax is imported); the process keeps its id, so signals sent to
it still arrive.

Nothing happens where the library is not found, where LD_PRELOAD already
names it, where POLYFLAX_TCMALLOC=0 turns it off, or in the re-executed
process itself (it carries a marker in its environment, so it never loops).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from typing import Mapping

# Set to 0 (or false, no, off) to keep the system's malloc.
SWITCH_VARIABLE = "POLYFLAX_TCMALLOC"
# Set in the re-executed process: it must not re-execute again.
MARKER_VARIABLE = "POLYFLAX_TCMALLOC_REEXECUTED"
# Debian/Ubuntu's libtcmalloc-minimal4, and the same soname elsewhere.
LIBRARY_NAME = "libtcmalloc_minimal.so.4"
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/lib64", "/usr/lib64", "/usr/local/lib", "/usr/lib", "/lib")
_OFF = ("0", "false", "no", "off")


def find_tcmalloc() -> str | None:
  """The path of libtcmalloc_minimal, or None where it is not installed."""
  for directory in LIBRARY_DIRS:
    path = os.path.join(directory, LIBRARY_NAME)
    if os.path.isfile(path):
      return path
  found = ctypes.util.find_library("tcmalloc_minimal")  # a bare name, for the loader to find
  if found:
    return found
  return None


def is_turned_off(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether POLYFLAX_TCMALLOC asks for the system's malloc."""
  return environ.get(SWITCH_VARIABLE, "").strip().lower() in _OFF


def _preloads_tcmalloc(environ: Mapping[str, str]) -> bool:
  return "tcmalloc" in environ.get("LD_PRELOAD", "")


def use_tcmalloc() -> None:
  """Re-executes this command line with tcmalloc in LD_PRELOAD, where that applies.

  Returns (doing nothing) off Linux, when the switch is off, when LD_PRELOAD
  already holds tcmalloc, in a process this function started, or when the
  library is not installed; otherwise it does not return.
  """
  environ = os.environ
  if (not sys.platform.startswith("linux") or is_turned_off(environ)
      or _preloads_tcmalloc(environ) or environ.get(MARKER_VARIABLE)):
    return
  library = find_tcmalloc()
  if library is None:
    return
  env = dict(environ)
  env["LD_PRELOAD"] = ":".join(filter(None, [library, environ.get("LD_PRELOAD", "")]))
  env[MARKER_VARIABLE] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def loaded_tcmalloc() -> str | None:
  """The tcmalloc library mapped into this process, or None (read from /proc/self/maps)."""
  try:
    with open("/proc/self/maps", encoding="utf-8") as maps:
      for line in maps:
        if "tcmalloc" in line:
          return line.split()[-1]
  except OSError:
    return None
  return None


def describe() -> str:
  """Which allocator this process runs with, in a few words (the benchmarks print it)."""
  library = loaded_tcmalloc()
  if library:
    return f"tcmalloc ({library})"
  if is_turned_off():
    return f"the system's malloc ({SWITCH_VARIABLE}=0)"
  if find_tcmalloc() is None:
    return "the system's malloc (tcmalloc not found: apt-get install libtcmalloc-minimal4)"
  return "the system's malloc"
