"""The evaluate mode end to end: main.py on the session's tiny run (conftest.py).

Scoring, and the predict mode, have their own files (test_scoring.py,
test_predict.py); the batched decoder is tested in test_decode.py. The
report's layout is also checked on its own, without a model.
"""

import json
import pathlib
import re
import sys

import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax
from polyflax.events import read_scalars

from polyflax import algebra, evaluate, scoring

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main(tiny_run, *flags, stdin=None, workdir=None):
  """Runs main.py on the tiny run, or on `workdir`, a copy of it; stdin and outputs are bytes."""
  command = [sys.executable, "main.py", "--config", "configs/tiny.py",
             "--workdir", str(workdir or tiny_run.workdir),
             f"--config.data_dir={tiny_run.data_dir}", "--config.generated_size=2000", *flags]
  return forked_python.run(command, cwd=REPO, capture_output=True, input=stdin, timeout=600)


def read_predictions(path):
  with open(path, encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f]
  assert rows[0] == ["input", "target", "prediction", "correct", "confidence"]
  assert all(len(row) == 5 for row in rows)
  assert all(0.0 < float(row[4]) <= 1.0 for row in rows[1:])
  return rows[1:]


def check_report(stdout, metrics, num_examples):
  """The printed report ends as the reference's did and agrees with metrics.json.

  Its groups and confidence bins are small tables, one row a line.
  """
  lines = stdout.splitlines()
  assert re.fullmatch(r"Final Score = [01]\.\d{4}", lines[-1]), lines[-1]
  assert lines[-1] == f"Final Score = {metrics['exact_match']:.4f}"
  assert lines[-2] == f"Number of Examples: {num_examples}"
  assert lines[-3] == f"Number Correct: {metrics['num_correct']}"
  assert metrics["num_examples"] == num_examples
  for field in ("Input: ", "Target: ", "Predicted: ", "score: "):
    assert sum(line.startswith(field) for line in lines) == 5  # examples_to_print
  header = next(index for index, line in enumerate(lines) if line.split()[:2] == ["group", "lines"])
  assert lines[header - 1].startswith("algebraically equivalent: ")
  tables = lines[header:next(index for index, line in enumerate(lines)
                             if line.startswith("decoded "))]
  assert max(map(len, tables)) < 100, tables
  (all_row,) = [line.split() for line in lines if line.startswith("all ")]
  assert all_row == ["all", f"{num_examples:,}", f"{metrics['num_failures']:,}",
                     f"{metrics['exact_match']:.4f}"]
  bins = [line.split() for line in lines if re.match(r"0\.?[0-9]*-[0-9.]+ ", line)]
  assert sum(int(row[1].replace(",", "")) for row in bins) == num_examples
  assert sum(int(row[2].replace(",", "")) for row in bins) == metrics["num_failures"]


def test_evaluate_mode_scores_the_test_split_and_writes_its_outputs(tiny_run, tiny_run_copy):
  data_dir, workdir = tiny_run.data_dir, tiny_run_copy  # evaluation writes into workdir/eval
  result = run_main(tiny_run, "--mode=evaluate", "--config.eval.limit=48", workdir=workdir)
  stderr = result.stderr.decode()
  assert result.returncode == 0, stderr[-3000:]
  assert "Traceback" not in stderr
  assert "48/48" in stderr  # the progress bar ran to the end
  metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
  check_report(result.stdout.decode(), metrics, 48)
  for name in ("exact_match", "num_correct", "num_examples", "equivalence", "num_equivalent",
               "exact_match_shape_binomials", "exact_match_unseen", "failures_wrong_linear",
               "decode_sequences_per_second", "compile_seconds", "step"):
    assert name in metrics, name
  assert metrics["test_file"] == str(data_dir / "test_set.txt")
  assert metrics["trained_on"] == str(data_dir / "train_set.txt")
  # The rate is of the 48 lines decoded, over the decoding time alone, as printed.
  assert metrics["decode_sequences_per_second"] == pytest.approx(48 / metrics["decode_seconds"])
  assert (f"decoded 48 sequences in {metrics['decode_seconds']:.2f} s "
          f"({metrics['decode_sequences_per_second']:,.0f} sequences/s; "
          f"compilation {metrics['compile_seconds']:.1f} s apart)") in result.stdout.decode()
  assert metrics["num_examples_unseen"] + metrics.get("num_examples_seen", 0) == 48
  assert metrics["equivalence"] >= metrics["exact_match"]
  assert sum(metrics[f"failures_{kind}"] for kind in ("unparseable", "printed_differently",
                                                      "wrong_unit")) <= metrics["num_failures"]

  rows = read_predictions(workdir / "eval" / "predictions.tsv")
  test_lines = (data_dir / "test_set.txt").read_text().splitlines()[:48]
  assert [f"{row[0]}={row[1]}" for row in rows] == test_lines
  assert [row[3] for row in rows] == [str(int(row[2] == row[1])) for row in rows]
  assert sum(int(row[3]) for row in rows) == metrics["num_correct"]

  scalars = read_scalars(workdir / "eval")
  assert scalars["test/exact_match"] == [(metrics["step"], pytest.approx(metrics["exact_match"]))]
  assert "test/failures_wrong_linear" in scalars and "test/exact_match_shape_binomials" in scalars


def test_evaluate_mode_on_a_file_of_real_lines_with_beam_search(tiny_run, tmp_path, real_dev_lines):
  real_file = tmp_path / "real.txt"
  real_file.write_text("\n".join(real_dev_lines[:300]) + "\n")
  output_dir = tmp_path / "real_eval"
  result = run_main(tiny_run, "--mode=evaluate", f"--config.eval.test_file={real_file}",
                    f"--config.eval.output_dir={output_dir}", "--config.eval.beam_size=2")
  stderr = result.stderr.decode()
  assert result.returncode == 0, stderr[-3000:]
  metrics = json.loads((output_dir / "metrics.json").read_text())
  check_report(result.stdout.decode(), metrics, 300)
  assert metrics["test_file"] == str(real_file) and metrics["beam_size"] == 2
  assert "beam 2" in result.stdout.decode().splitlines()[0]
  # Real lines all have one of the four shapes.
  assert sum(metrics.get(f"num_examples_shape_{shape}", 0) for shape in algebra.SHAPES) == 300
  rows = read_predictions(output_dir / "predictions.tsv")
  assert [f"{row[0]}={row[1]}" for row in rows] == real_dev_lines[:300]
  assert "test/exact_match" in read_scalars(output_dir)


def test_report_has_a_table_of_the_linear_coefficients_size_in_bin_order():
  # |a*d+b*c|: 0, 1, 9, 122, 400; the row of 9 is wrong; 2*y*(7*y-11) is in no bin.
  pairs = [("(-8*k-8)*(4*k-4)", "32-32*k**2"), ("(-8*y-25)*(7*y-22)", "-56*y**2+y+550"),
           ("(17-6*y)*(-9*y-24)", "54*y**2-9*y-408"), ("(21-t)*(-6*t-4)", "6*t**2-122*t-84"),
           ("(25-9*x)*(7*x-25)", "-63*x**2+400*x-625"), ("2*y*(7*y-11)", "14*y**2-22*y")]
  predictions = [expanded for _, expanded in pairs]
  predictions[2] = "54*y**2+9*y-408"
  metrics = scoring.score(pairs, predictions)
  metrics.update(evaluate.confidence_metrics([0.95] * 6, [True, True, False, True, True, True],
                                             None))
  lines = evaluate._summary(metrics).splitlines()  # pylint: disable=protected-access
  title = lines.index(next(line for line in lines if line.startswith("linear coefficient |s|")))
  assert lines[title].split()[-4:] == ["lines", "wrong", "exact", "match"]
  # Bin order, not alphabetical ("10-299" after "1-9"); no line for the empty 300-399 bin.
  assert [line.split() for line in lines[title + 1:title + 5]] == [
      ["|s|", "0", "1", "0", "1.0000"], ["|s|", "1-9", "2", "1", "0.5000"],
      ["|s|", "10-299", "1", "0", "1.0000"], ["|s|", ">=400", "1", "0", "1.0000"]]
  assert lines[title + 5].startswith("confidence ")
  # The group table above keeps its rows and leaves the |s| groups to this one.
  group_rows = [line.split()[0] for line in lines[lines.index(next(
      line for line in lines if line.startswith("group "))) + 1:title]]
  assert group_rows == ["all", "linear_cancels", "shape_binomials", "shape_k_u_binomial"]
  assert max(map(len, lines)) < 100
