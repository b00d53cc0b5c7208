"""Batched decoding, and the evaluate and predict modes end to end.

The end-to-end tests share one tiny run trained in-process once per module;
scoring and prediction's input checks have their own files (test_scoring.py,
test_predict.py).
"""

import json
import logging
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from polyflax.events import read_scalars
from flax import nnx

from polyflax import algebra, bucketing, config_files, decode, eval_batches, generate, inference
from polyflax import input_pipeline
from polyflax import models
from polyflax import sharding
from polyflax import train
from polyflax import vocab as vocab_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = vocab_lib.Vocab.default()

# ---------------------------------------------------------------------------
# Decoder: buckets, batches and row order.


def decode_compilations(records):
  """The shapes the decoding function was compiled for, from `jax.log_compiles` records."""
  return [record.getMessage() for record in records
          if re.search(r"Compiling .*greedy_decode", record.getMessage())]


def test_bucketed_batched_decoding_returns_every_row_in_order(caplog):
  config = models.ModelConfig(vocab_size=VOCAB.size, hidden_dim=32, num_heads=4, encoder_layers=1,
                              decoder_layers=1, encoder_ff_dim=64, decoder_ff_dim=64, max_len=16)
  graphdef, params = nnx.split(models.Transformer(config, rngs=nnx.Rngs(3)), nnx.Param)
  keys = iter(jax.random.split(jax.random.key(4), len(jax.tree.leaves(params))))
  params = jax.tree.map(lambda x: x + 0.5 * jax.random.normal(next(keys), x.shape), params)
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 16, 45)
  source_ids = rng.integers(4, VOCAB.size, (45, 16)).astype(np.int32)
  source_ids[np.arange(16)[None] >= lengths[:, None]] = 0
  source_ids[np.arange(45), lengths - 1] = VOCAB.eos_id
  mesh = sharding.make_mesh()
  decoder = decode.Decoder(graphdef, params, VOCAB, mesh, max_len=16,
                           batching=bucketing.Batching(buckets=(8, 16)))
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    decoder.warm_up(source_ids, batch_size=8)
    warm_up_compilations = decode_compilations(caplog.records)
    caplog.clear()
    # Batches of 16 and 8 rows: several per bucket, the last ones part padding.
    decoded = decoder.decode_ids(source_ids, batch_size=8)
    decode_compilations_after_warm_up = decode_compilations(caplog.records)
  # Warming up compiles one shape per bucket; decoding then compiles nothing.
  assert len(warm_up_compilations) == 2, warm_up_compilations
  assert decode_compilations_after_warm_up == []
  direct = jax.jit(lambda p, x: decode.greedy_decode(graphdef, p, x, max_len=16))(
      params, jnp.asarray(source_ids))
  expected = VOCAB.decode_batch(np.asarray(direct))
  assert decoded == expected
  assert len(set(expected)) > 5  # the outputs differ from row to row


def test_batches_shrink_to_fit_a_small_set_but_never_multiply():
  decoder = decode.Decoder(None, None, VOCAB, sharding.make_mesh(), max_len=32,
                           batching=bucketing.Batching())
  factored = [line.split("=")[0] for line in generate.generate_lines(300, seed=0)]
  source_ids = VOCAB.encode_batch(factored, 32)
  full = decoder.batches(source_ids, 4096)
  layout = full.layout
  assert len(full) == sum(count > 0 for count in layout.bucket_counts)  # one batch per bucket
  assert sum(layout.batch_sizes) < 2 * 300  # not 4096 * (32 / 12 + 32 / 16 + 32 / 20 + 1)
  for count, size in zip(layout.bucket_counts, layout.batch_sizes):
    assert size >= count
  for batch_size in (8, 64, 256):
    expected = len(eval_batches.EvalBatches(source_ids, np.zeros_like(source_ids),
                                            batch_size=batch_size, batching=decoder.batching))
    assert len(decoder.batches(source_ids, batch_size)) == expected


# ---------------------------------------------------------------------------
# The printed report.


def test_the_report_shows_groups_and_confidence_bins_as_small_tables():
  from polyflax import evaluate, scoring  # pylint: disable=import-outside-toplevel
  pairs = [("(k-15)*(2*k+29)", "2*k**2-k-435"), ("(17-2*i)*(i+8)", "-2*i**2+i+136"),
           ("2*y*(7*y-11)", "14*y**2-22*y"), ("(19-5*h)*(5*h+19)", "361-25*h**2")]
  predictions = ["2*k**2-k-435", "-2*i**2+3*i+136", "14*y**2-22*y", "361-25*h**2+h"]
  confidences = [0.99995, 0.42, 0.995, 0.97]
  correct = [predicted == expanded for predicted, (_, expanded) in zip(predictions, pairs)]
  metrics = scoring.score(pairs, predictions)
  metrics.update(evaluate.confidence_metrics(confidences, correct, 0.98))
  assert (metrics["flagged"], metrics["wrong_flagged"]) == (2, 2)
  assert metrics["flagged_share"] == 0.5 and metrics["wrong_flagged_share"] == 1.0
  assert metrics["confidence_0-0.5_lines"] == 1 and metrics["confidence_0-0.5_exact_match"] == 0
  report = evaluate._summary(metrics).splitlines()  # pylint: disable=protected-access
  assert report[0] == "algebraically equivalent: 0.5000"
  assert report[1].split() == ["group", "lines", "wrong", "exact", "match"]
  rows = {line.split()[0]: line.split()[1:] for line in report[2:]
          if not line.startswith(("confidence threshold", "failures"))}
  assert rows["all"] == ["4", "2", "0.5000"]
  assert rows["shape_binomials"] == ["3", "2", "0.3333"]
  assert rows["linear_cancels"] == ["1", "1", "0.0000"]
  assert rows["shape_k_u_binomial"] == ["1", "0", "1.0000"]
  assert rows["confidence"] == ["lines", "wrong", "exact", "match"]
  assert [rows[label] for label in ("0-0.5", "0.9-0.99", "0.99-0.999", "0.9999-1")] == [
      ["1", "1", "0.0000"], ["1", "1", "0.0000"], ["1", "0", "1.0000"], ["1", "0", "1.0000"]]
  assert ("confidence threshold 0.980000 (the model's card) flags 2 answers (50.00% of all) and "
          "2 of the 2 wrong ones (100.0%)") in report
  assert report[-1] == "failures (2): wrong_linear 2"
  # The columns line up: every row of a table is as long as its header.
  group_table = report[1:report.index(next(line for line in report if line.startswith("conf")))]
  assert len({len(line) for line in group_table}) == 1

  without = scoring.score(pairs, predictions)
  without.update(evaluate.confidence_metrics(confidences, correct, None))
  assert ("no confidence threshold in the model's card: no answer flagged"
          in evaluate._summary(without).splitlines())  # pylint: disable=protected-access
  assert "flagged" not in without


# ---------------------------------------------------------------------------
# End to end on a tiny trained run.


def tiny_config(data_dir):
  return config_files.tiny(data_dir, generated_size=2000, max_epochs=1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """(data folder, workdir) of a tiny run trained for one epoch."""
  root = tmp_path_factory.mktemp("tiny_run")
  data_dir, workdir = root / "inputs", root / "run"
  train.train_and_evaluate(tiny_config(data_dir), str(workdir))
  return data_dir, workdir


def run_main(tiny_run, *flags, stdin=None):
  """Runs main.py on the tiny run; stdin and outputs are bytes."""
  data_dir, workdir = tiny_run
  command = [sys.executable, "main.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
             f"--config.data_dir={data_dir}", "--config.generated_size=2000", *flags]
  return subprocess.run(command, cwd=REPO, capture_output=True, input=stdin, timeout=600)


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


def test_evaluate_mode_scores_the_test_split_and_writes_its_outputs(tiny_run):
  data_dir, workdir = tiny_run
  result = run_main(tiny_run, "--mode=evaluate", "--config.eval.limit=48")
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


@pytest.fixture(scope="module")
def expand_in_process(tiny_run):
  """Expands one data-spelt expression with the tiny run's best checkpoint, in this process."""
  data_dir, workdir = tiny_run
  config = tiny_config(data_dir)
  model = inference.restore_for_inference(config, str(workdir))
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=model.model_cfg.max_len,
                           batching=input_pipeline.batching(config, model.mesh,
                                                            buckets=(model.model_cfg.max_len,)))
  return lambda factored: decoder.decode_texts([factored], batch_size=1)[0]


def test_predict_mode_expands_a_good_expression(tiny_run, expand_in_process):
  result = run_main(tiny_run, "--mode=predict", "--expr", "(2*k+29)*(k-15)")
  stderr = result.stderr.decode()
  assert result.returncode == 0, stderr[-3000:]
  assert "error" not in stderr and "Traceback" not in stderr
  # The model's answer for the data's spelling of the product.
  assert result.stdout.decode().splitlines() == [expand_in_process("(k-15)*(2*k+29)")]


def test_predict_mode_refuses_a_malformed_expression_in_one_line(tiny_run):
  result = run_main(tiny_run, "--mode=predict", "--expr", "(k-15)*(2*k+29\x1b[0m\n")
  assert result.returncode == 1
  assert result.stdout == b""
  (line,) = result.stderr.decode().splitlines()
  assert line.startswith("error: unknown token '\\x1b'"), line


def test_predict_mode_answers_each_line_of_standard_input_in_its_place(tiny_run,
                                                                     expand_in_process):
  stdin = (b"(k-15)*(2*k+29)\n\n\xff\xfe\nk**3\n" + b"(" * 100_000 + b"\n"
           + b" sin(k) * ( 3 - sin(k) )\r\n")
  result = run_main(tiny_run, "--mode=predict", stdin=stdin)
  stderr = result.stderr.decode()
  assert result.returncode == 1
  assert "Traceback" not in stderr
  answers = result.stdout.decode().split("\n")
  assert answers[-1] == "" and len(answers) == 7, answers  # one line per input line
  assert answers[1] == ""  # an empty line for an empty one
  assert [answer.startswith("error: ") for answer in answers[:6]] == [
      False, False, True, True, True, False]
  assert answers[0] and answers[5]
  assert "exponent 3" in answers[3] and "too long" in answers[4]
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert [error.split(":")[:2] for error in errors] == [
      ["error", " line 3"], ["error", " line 4"], ["error", " line 5"]], stderr
  # Besides: the run is barely trained and has no threshold (test_predict.py).
  assert [line.split(" ")[0] for line in stderr.splitlines() if line not in errors] == [
      "warning:", "note:"], stderr
  assert errors[1] == "error: line 4: " + answers[3][len("error: "):]
  # The answers are the decoder's own, in the data's spelling.
  assert [answers[0], answers[5]] == [expand_in_process("(k-15)*(2*k+29)"),
                                      expand_in_process("(3-sin(k))*sin(k)")]
