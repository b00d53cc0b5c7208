"""notebooks/tour.ipynb runs from top to bottom and is committed with its outputs."""

import json
import pathlib
import re
import sys

import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

REPO = pathlib.Path(__file__).resolve().parents[1]
TOUR = REPO / "notebooks" / "tour.ipynb"
RUNNER = REPO / "scripts" / "run_notebook.py"


def _notebook(cells):
  """A notebook of (cell_type, source) pairs."""
  return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": kind, "id": f"c{i}", "metadata": {}, "source": source,
                     **({"outputs": [], "execution_count": None} if kind == "code" else {})}
                    for i, (kind, source) in enumerate(cells)]}


def _run(notebook_path, out_path):
  return forked_python.run([sys.executable, str(RUNNER), str(notebook_path), "--out", str(out_path)],
                        cwd=REPO, capture_output=True, text=True, timeout=900)


def _text(cell):
  return "".join("".join(output.get("text") or output["data"]["text/plain"])
                 for output in cell["outputs"])


def test_runner_records_streams_last_expression_and_stops_at_an_error(tmp_path):
  path = tmp_path / "nb.ipynb"
  path.write_text(json.dumps(_notebook([
      ("markdown", "# title"),
      ("code", "import os, sys\nprint('hello')\nprint('bar 1\\rbar 2', file=sys.stderr)\nx = 41"),
      ("code", "x + 1"),
      ("code", "x;"),
      ("code", "print(os.path.basename(os.getcwd()))"),
  ])))
  result = _run(path, tmp_path / "out.ipynb")
  assert result.returncode == 0, result.stderr
  cells = [c for c in json.loads((tmp_path / "out.ipynb").read_text())["cells"]
           if c["cell_type"] == "code"]
  assert [c["execution_count"] for c in cells] == [1, 2, 3, 4]
  assert cells[0]["outputs"] == [
      {"output_type": "stream", "name": "stdout", "text": ["hello\n"]},
      {"output_type": "stream", "name": "stderr", "text": ["bar 2\n"]}]  # as a terminal shows it
  assert cells[1]["outputs"][0]["output_type"] == "execute_result"
  assert _text(cells[1]) == "42" and cells[2]["outputs"] == []  # `;` shows nothing
  assert _text(cells[3]) == f"{tmp_path.name}\n"  # the notebook's folder, as Jupyter starts

  path.write_text(json.dumps(_notebook([("code", "print('before')\n1 / 0"), ("code", "print('never')")])))
  result = _run(path, tmp_path / "failed.ipynb")
  assert result.returncode == 1 and not (tmp_path / "failed.ipynb").exists()
  assert "before" in result.stderr and "ZeroDivisionError" in result.stderr
  assert "<cell 1>" in result.stderr and "never" not in result.stderr

  path.write_text(json.dumps(_notebook([("code", "!ls")])))
  result = _run(path, tmp_path / "magic.ipynb")
  assert result.returncode == 1 and "IPython syntax" in result.stderr


def test_tour_is_committed_with_outputs_and_its_images_exist():
  notebook = json.loads(TOUR.read_text(encoding="utf-8"))
  code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
  assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
  assert all(cell["outputs"] for cell in code[1:-1])  # the first sets up, the last cleans up
  committed = "".join(map(_text, code))
  for expected in ("parameters", "fast_dev_run", "Input: ", "Target: ", "Predicted: ", "score: ",
                   "Final Score = ", "2*k**2-k-435"):
    assert expected in committed
  for cell in notebook["cells"]:
    if cell["cell_type"] == "markdown":
      for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", "".join(cell["source"])):
        assert (TOUR.parent / target).is_file(), target


def run_tour(folder):
  """(scripts/run_notebook.py's result, the notebook it wrote) of the tour, top to bottom."""
  return _run(TOUR, folder / "tour.ipynb"), folder / "tour.ipynb"


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {"tour": run_tour}


@pytest.mark.slow
def test_tour_runs_from_top_to_bottom(background_runs):
  result, written = background_runs["tour"].result()
  assert result.returncode == 0, result.stderr[-4000:]
  cells = json.loads(written.read_text())["cells"]
  printed = "".join(_text(cell) for cell in cells if cell["cell_type"] == "code")
  assert re.search(r"Input: .+\nTarget: .+\nPredicted: .+\nscore: [01]\n", printed)
  assert re.search(r"^Final Score = [01]\.\d{4}$", printed, re.M)
  assert "(k-15)*(2*k+29)          -> 2*k**2-k-435" in printed
