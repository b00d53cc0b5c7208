"""Runs a notebook's code cells in order, as a Jupyter kernel would, without Jupyter.

  python scripts/run_notebook.py notebooks/tour.ipynb                               # run it
  python scripts/run_notebook.py notebooks/tour.ipynb --out notebooks/tour.ipynb    # and keep the outputs

The cells run in one namespace, in this interpreter, with the notebook's
folder as the working folder (where Jupyter starts a kernel). What a cell
prints to stdout and stderr becomes its outputs, in order, and its last
expression, unless None or followed by `;`, is shown as IPython shows it
(`execute_result`, its repr). Carriage returns are resolved as a terminal
shows them, so a progress bar leaves its last state. `--out` writes the
notebook with these outputs and execution counts, in the layout Jupyter
saves. A cell that raises stops the run: its traceback goes to stderr and
the exit status is 1. The time each cell took goes to stderr as it ends.

Only plain Python cells are run: a cell with IPython syntax (`%magic`,
`!command`) is refused, so a notebook that runs here also runs in Jupyter.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import linecache
import os
import pathlib
import pprint
import sys
import time
import traceback


class _Streams:
  """Stand-ins for sys.stdout and sys.stderr that record what is written, in order."""

  def __init__(self):
    self.chunks: list[tuple[str, str]] = []  # (stream name, text)

  def stream(self, name: str) -> io.TextIOBase:
    chunks = self.chunks

    class _Writer(io.TextIOBase):
      encoding = "utf-8"

      def writable(self):
        return True

      def write(self, text):
        if text:
          chunks.append((name, text))
        return len(text)

      def isatty(self):
        return False

    return _Writer()


def _as_terminal_shows(text: str) -> str:
  """`text` with each line cut to what follows its last carriage return, as Jupyter shows it."""
  return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def _source_lines(text: str) -> list[str]:
  """`text` as nbformat stores multi-line strings: lines that keep their newline."""
  return text.splitlines(keepends=True)


def _stream_outputs(chunks: list[tuple[str, str]]) -> list[dict]:
  """One `stream` output per run of writes to the same stream."""
  merged: list[list[str]] = []
  for name, text in chunks:
    if merged and merged[-1][0] == name:
      merged[-1][1] += text
    else:
      merged.append([name, text])
  outputs = []
  for name, text in merged:
    text = _as_terminal_shows(text)
    if text.strip():
      outputs.append({"output_type": "stream", "name": name, "text": _source_lines(text)})
  return outputs


def _refuse_ipython_syntax(source: str, number: int) -> None:
  for line in source.splitlines():
    if line.lstrip().startswith(("%", "!")):
      raise SyntaxError(f"cell {number}: IPython syntax is not run here: {line.strip()!r}")


def run_cell(source: str, namespace: dict, number: int) -> list[dict]:
  """Runs one cell's source in `namespace`; returns its outputs (raises what the cell raises)."""
  _refuse_ipython_syntax(source, number)
  filename = f"<cell {number}>"
  linecache.cache[filename] = (len(source), None, _source_lines(source), filename)
  tree = ast.parse(source, filename)
  last = None
  if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
    last = ast.Expression(tree.body.pop().value)
  streams = _Streams()
  try:
    with contextlib.redirect_stdout(streams.stream("stdout")), \
         contextlib.redirect_stderr(streams.stream("stderr")):
      exec(compile(tree, filename, "exec"), namespace)  # pylint: disable=exec-used
      value = eval(compile(last, filename, "eval"), namespace) if last else None  # pylint: disable=eval-used
  except BaseException:
    # What the failing cell printed, then (from the caller) its traceback.
    sys.stderr.write("".join(text for _, text in streams.chunks))
    raise
  outputs = _stream_outputs(streams.chunks)
  if value is not None:
    outputs.append({"output_type": "execute_result", "execution_count": number, "metadata": {},
                    "data": {"text/plain": _source_lines(pprint.pformat(value, sort_dicts=False))}})
  return outputs


def run_notebook(path: pathlib.Path) -> dict:
  """The notebook at `path` with every code cell run in order and its outputs set."""
  notebook = json.loads(path.read_text(encoding="utf-8"))
  if notebook.get("nbformat") != 4:
    raise ValueError(f"{path}: nbformat {notebook.get('nbformat')}, expected 4")
  namespace = {"__name__": "__main__", "__builtins__": __builtins__}
  os.chdir(path.resolve().parent)
  number = 0
  start = time.perf_counter()
  for cell in notebook["cells"]:
    if cell["cell_type"] != "code":
      continue
    number += 1
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cell_start = time.perf_counter()
    cell["outputs"] = run_cell(source, namespace, number)
    cell["execution_count"] = number
    print(f"cell {number}: {time.perf_counter() - cell_start:.1f} s", file=sys.stderr, flush=True)
  print(f"{number} cells in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
  return notebook


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("notebook", type=pathlib.Path)
  parser.add_argument("--out", type=pathlib.Path,
                      help="write the notebook with its new outputs here (it may be the same file)")
  args = parser.parse_args()
  out = args.out.resolve() if args.out else None  # before the run changes folder
  try:
    notebook = run_notebook(args.notebook)
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
    return 1
  if out:
    out.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                   encoding="utf-8")
  return 0


if __name__ == "__main__":
  sys.exit(main())
