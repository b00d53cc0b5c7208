"""The model shipped in checkpoints/cpu: it loads, predicts and scores as the README says."""

import json
import os
import pathlib
import re
import sys

import jax.numpy as jnp
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax import config_files
from polyflax import inference

# Every test here trains or decodes at length (see pytest.ini).
pytestmark = pytest.mark.slow

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "checkpoints" / "cpu"
# The shipped model's exact match on all of real_dev and on the whole
# generated test split, as docs/results.md (which the README links to) writes
# them; a test below reads them there. The first 2,000 lines of each are held
# to 0.999 (at most 2 wrong); the floor moves with those figures when another
# model replaces the shipped one.
README_FIGURES = {"real_dev": 1.0000, "generated": 1.0000}
LINES_SCORED = 2000
README_FLOOR = 0.999
PREDICT_COMMAND = ('python main.py --config configs/cpu.py --workdir checkpoints/cpu '
                   '--mode=predict --expr "(k-15)*(2*k+29)"')


def _code_blocks(markdown: str) -> list[str]:
  return re.findall(r"```[a-z]*\n(.*?)```", markdown, flags=re.S)


def test_the_readme_first_example_uses_the_shipped_model():
  blocks = _code_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
  # The first block is the one-line illustration of the task; the second is
  # what a new user runs first.
  assert PREDICT_COMMAND in blocks[1]
  assert "2*k**2-k-435" in blocks[1]


def test_the_shipped_folder_is_what_the_readme_describes():
  card = json.loads((SHIPPED / "model.json").read_text(encoding="utf-8"))
  config = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))
  assert card["parameters"] == 997_760
  assert config["train_data"] == "generated"
  # Trained to the end of its last epoch, so seen/unseen are exact.
  assert card["iterator"]["epoch"] == config["max_epochs"] == 5
  assert card["iterator"]["position"] == 0
  # Nothing of the machine that exported it: the source step is relative.
  assert not os.path.isabs(card["trained_with"]["checkpoint"])
  for path in SHIPPED.rglob("*"):
    if path.is_file():
      assert path.stat().st_size < 15 * 2**20, path


def test_predict_with_the_shipped_model_from_the_command_line():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  command = [sys.executable, "main.py", "--config", "configs/cpu.py", "--workdir",
             "checkpoints/cpu", "--mode=predict", "--expr", "(k-15)*(2*k+29)"]
  result = forked_python.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == "2*k**2-k-435"


def test_the_floor_is_set_from_the_readme_figures():
  results = (REPO_ROOT / "docs" / "results.md").read_text(encoding="utf-8")
  section = results[results.index("## The shipped CPU model"):]
  row = re.search(r"^\| all lines \| \*\*([0-9.]+)\*\* \(50,001[;\w ]*\) "
                  r"\| \*\*([0-9.]+)\*\* \(200,000[;\w ]*\) \|$", section, flags=re.M)
  assert row, "docs/results.md's table of the shipped model has no 'all lines' row"
  assert {"real_dev": float(row[1]), "generated": float(row[2])} == README_FIGURES
  assert README_FLOOR <= min(README_FIGURES.values())


def shipped_predictions(folder):
  """{"generated"/"real": [(factored, expanded, predicted)]} of the first LINES_SCORED lines.

  tests/shipped_predictions.py in a process of its own; the real lines where they are found.
  """
  real = os.environ.get("POLYFLAX_REAL_DEV", "")
  command = [sys.executable, "tests/shipped_predictions.py", str(folder / "predictions.json"),
             str(folder / "generated_split"), str(LINES_SCORED)]
  result = forked_python.run(command + ([real] if os.path.exists(real) else []), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads((folder / "predictions.json").read_text(encoding="utf-8"))


# Started when the session begins, beside the other tests (conftest.py).
BACKGROUND_RUNS = {"predictions": shipped_predictions}


def exact_match_and_failures(rows):
  failures = [f"{factored}={expanded} predicted {predicted}"
              for factored, expanded, predicted in rows if predicted != expanded]
  return 1 - len(failures) / len(rows), failures


def test_the_shipped_model_expands_real_lines_as_the_readme_says(background_runs, real_dev_lines):
  rows = background_runs["predictions"].result()["real"]
  assert [f"{factored}={expanded}" for factored, expanded, _ in rows] == (
      real_dev_lines[:LINES_SCORED])
  assert len(rows) == LINES_SCORED
  exact, failures = exact_match_and_failures(rows)
  assert exact >= README_FLOOR, (exact, failures)


def test_the_shipped_model_expands_generated_test_lines_as_the_readme_says(background_runs):
  rows = background_runs["predictions"].result()["generated"]
  assert len(rows) == LINES_SCORED
  exact, failures = exact_match_and_failures(rows)
  assert exact >= README_FLOOR, (exact, failures)


def test_the_shipped_model_scores_the_same_in_bfloat16(background_runs, real_dev_lines):
  # The exported model's own config (compute_dtype 'auto', float32 on a CPU)
  # must not override the one asked for.
  config = config_files.load(REPO_ROOT / "configs" / "cpu.py", ["--config.compute_dtype=bfloat16"])
  assert inference.restore_for_inference(config, str(SHIPPED)).model_cfg.dtype == jnp.bfloat16
  predicted = background_runs["predictions"].result()
  low = predicted["real_bfloat16"]
  assert len(low) == 512
  full = predicted["real"][:len(low)]
  assert [row[:2] for row in low] == [row[:2] for row in full]
  scores = {"float32": exact_match_and_failures(full)[0], "bfloat16": exact_match_and_failures(low)[0]}
  # Within 0.002 (one line in 512).
  assert abs(scores["bfloat16"] - scores["float32"]) <= 0.002, scores
  assert scores["float32"] >= 0.99, scores


def test_predict_refuses_what_is_outside_the_data_and_keeps_lines_in_place():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  inputs = ["(k-15)*(2*k+29)", "(x+100)*(x+1)", "(x+40)*(x-1)", "(10*x+1)*(x+2)", "(X+3)*(X-2)"]
  command = [sys.executable, "main.py", "--config", "configs/cpu.py", "--workdir",
             "checkpoints/cpu", "--mode=predict", "--tsv"]
  result = forked_python.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          input="\n".join(inputs) + "\n", timeout=300, check=False)
  assert result.returncode == 1, result.stderr
  rows = [line.split("\t") for line in result.stdout.splitlines()]
  assert [row[0] for row in rows] == inputs
  assert rows[0][1] == "2*k**2-k-435" and rows[4][1] == "x**2+x-6"
  for (_, answer, _), number in zip(rows[1:4], ("constant 100", "constant 40", "coefficient 10")):
    assert answer.startswith(f"error: the {number} ") and "outside the data's range" in answer
  assert [line.split(":")[1] for line in result.stderr.splitlines()] == [
      " line 2", " line 3", " line 4"]
