"""Writing files atomically, with ordinary permissions.

Every text file the project writes (data splits and their manifest, a run's
`config.json` and `vocab.json`, an exported model's `model.json`) goes
through `write_text_atomic` or `write_lines_atomic`: the text is written to a
temporary file beside the target and renamed over it in one step, so a
reader never sees half a file, even if the writer is killed.

`tempfile.mkstemp` creates its file readable by its owner only (0600). The
renamed file gets the permissions an ordinary `open(path, "w")` would give
(0666 less the umask, usually 0644), so a data folder or a run shared by
several users or hosts stays readable to all of them.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Iterable


def _umask() -> int:
  """The process's umask (reading it means setting it; it is set straight back)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def ordinary_file_mode() -> int:
  """The mode `open(path, "w")` gives a new file: 0666 less the umask."""
  return 0o666 & ~_umask()


def ordinary_dir_mode() -> int:
  """The mode `os.mkdir(path)` gives a new folder: 0777 less the umask."""
  return 0o777 & ~_umask()


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> pathlib.Path:
  """Writes `lines`, each followed by a newline, so that `path` is never partial.

  Creates the parent folder if needed. Returns `path` as a Path.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.fchmod(handle, ordinary_file_mode())
    with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
      for line in lines:
        out.write(line)
        out.write("\n")
      out.flush()
      os.fsync(out.fileno())
    os.replace(temporary, path)
  except BaseException:
    pathlib.Path(temporary).unlink(missing_ok=True)
    raise
  return path


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes `text` (a newline is added if it lacks one) so that `path` is never partial."""
  return write_lines_atomic(path, [text[:-1] if text.endswith("\n") else text])
