"""Evaluation and prediction: scoring, batched decoding, the evaluate and predict modes.

The end-to-end tests share one tiny run trained in-process once per module.
"""

import json
import logging
import pathlib
import re
import subprocess
import sys

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from polyflax.events import read_scalars
from flax import nnx

from polyflax import algebra, config_files, decode, evaluate, generate, inference, input_pipeline
from polyflax import models
from polyflax import sharding
from polyflax import train
from polyflax import vocab as vocab_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = vocab_lib.Vocab.default()

# ---------------------------------------------------------------------------
# score()

# (factored, expanded, prediction, what the row should count as).
SCORED_ROWS = [
    ("(k-15)*(2*k+29)", "2*k**2-k-435", "2*k**2-k-435", "exact"),
    ("(21-t)*(-6*t-4)", "6*t**2-122*t-84", "6*t**2-84-122*t", "printed_differently"),
    ("2*y*(7*y-11)", "14*y**2-22*y", "14*y**2-22*y+", "unparseable"),
    ("(17-2*i)*(i+8)", "-2*i**2+i+136", "-2*i**2+3*i+136", "wrong_linear"),
    ("-7*sin(i)**2", "-7*sin(i)**2", "-7*sin(i)**2", "exact"),
    ("(z+3)**2", "z**2+6*z+9", "x**2+6*x+9", "wrong_unit"),
    ("5*(27-6*sin(j))*sin(j)", "-30*sin(j)**2+135*sin(j)", "-31*sin(j)**2+136*sin(j)",
     "wrong_quadratic+linear"),
]


def test_handcrafted_rows_are_expanded_correctly():
  for factored, expanded, _, _ in SCORED_ROWS:
    assert algebra.expand(factored) == expanded


def test_score_counts_exact_equivalent_and_wrong_coefficients():
  pairs = [(factored, expanded) for factored, expanded, _, _ in SCORED_ROWS]
  predictions = [predicted for _, _, predicted, _ in SCORED_ROWS]
  seen = {"(k-15)*(2*k+29)=2*k**2-k-435", "2*y*(7*y-11)=14*y**2-22*y"}
  metrics = evaluate.score(pairs, predictions, seen)
  assert metrics["num_examples"] == 7
  assert metrics["num_correct"] == 2
  assert metrics["exact_match"] == pytest.approx(2 / 7)
  assert metrics["num_equivalent"] == 3  # the two exact ones and the reordered one
  assert metrics["equivalence"] == pytest.approx(3 / 7)
  assert metrics["num_failures"] == 5
  assert {name: metrics[f"failures_{name}"] for name in evaluate.FAILURE_KINDS} == {
      "unparseable": 1, "printed_differently": 1, "wrong_unit": 1,
      "wrong_quadratic": 1, "wrong_linear": 2, "wrong_constant": 0}
  expected_groups = {  # group: (exact match, rows)
      "shape_binomials": (1 / 3, 3), "shape_k_u_binomial": (0.0, 2),
      "shape_monomial": (1.0, 1), "shape_square": (0.0, 1), "shape_trig": (0.5, 2),
      "seen": (0.5, 2), "unseen": (0.2, 5),
      "shape_binomials_seen": (1.0, 1), "shape_binomials_unseen": (0.0, 2),
      "shape_k_u_binomial_seen": (0.0, 1), "shape_k_u_binomial_unseen": (0.0, 1),
      "shape_monomial_unseen": (1.0, 1), "shape_square_unseen": (0.0, 1)}
  for group, (exact_match, count) in expected_groups.items():
    assert metrics[f"exact_match_{group}"] == pytest.approx(exact_match), group
    assert metrics[f"num_examples_{group}"] == count, group
  assert {name for name in metrics if name.startswith("num_examples_")} == {
      f"num_examples_{group}" for group in expected_groups}


def test_score_without_training_lines_has_no_seen_split_and_checks_lengths():
  metrics = evaluate.score([("(z+3)**2", "z**2+6*z+9")], ["z**2+6*z+9"])
  assert metrics["exact_match"] == 1.0
  assert not any(name.endswith(("_seen", "_unseen")) for name in metrics)
  with pytest.raises(ValueError, match="1 rows but 2 predictions"):
    evaluate.score([("(z+3)**2", "z**2+6*z+9")], ["a", "b"])


def test_failure_kinds_of_single_predictions():
  assert evaluate.failure_kinds("2*k**2-k-435", "2*k**2-k-435") == []
  assert evaluate.failure_kinds("2*k**2-k-435", "-k+2*k**2-435") == ["printed_differently"]
  assert evaluate.failure_kinds("2*k**2-k-435", "2*k**2-k-436") == ["wrong_constant"]
  assert evaluate.failure_kinds("2*k**2-k-435", "2*k**2-435") == ["wrong_linear"]
  assert evaluate.failure_kinds("2*k**2-k-435", "") == ["unparseable"]
  assert evaluate.failure_kinds("2*k**2-k-435", "2*k**2-k-?") == ["unparseable"]


# ---------------------------------------------------------------------------
# check_expression()

# Pieces of near-miss inputs: the grammar's tokens, broken ones, spaces, control
# characters, a lone surrogate, an Arabic-Indic digit and a long number.
PIECES = ["(", ")", "*", "**", "+", "-", "2", "15", "0", "k", "x", "sin(k)", "sin(", "cos",
          "tan(x)", " ", "\t", "\n", "=", "^", "**2", "**3", "/", "é", "\x00", "\x1b", "\u2028",
          "\ud800", "\u0663", "9" * 15]
nonzero_coefficients = st.integers(-9, 8).filter(bool)
constants = st.integers(-32, 31)
data_factored_sides = st.builds(
    lambda unit, a, b, c, d: algebra.format_factored(unit, (a, b), (c, d)),
    st.sampled_from(algebra.UNITS), nonzero_coefficients, constants, nonzero_coefficients,
    constants)
near_misses = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=25).map("".join),
    st.tuples(data_factored_sides, st.integers(0, 30), st.integers(0, 2),
              st.sampled_from(PIECES)).map(
                  lambda t: t[0][:t[1]] + t[3] + t[0][t[1] + t[2]:]))


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(text=st.one_of(
    st.text(max_size=150), near_misses,
    st.text(st.characters(categories=("Cc", "Cf", "Co", "Zl", "Zp")), max_size=120)))
def test_any_string_gives_an_expression_or_a_one_line_error(text):
  try:
    factored = evaluate.check_expression(text, VOCAB)
  except evaluate.InputError as error:
    message = str(error)
    assert message and message.isprintable(), repr(message)  # one line, no control characters
    assert len(message) <= evaluate.MAX_MESSAGE_CHARS
  else:
    # A product of two linear factors, as the data spells it, equal to the input.
    assert algebra.format_factored(*algebra.parse_factored(factored)) == factored
    assert algebra.parse_polynomial(factored) == algebra.parse_polynomial(text)
    assert len(factored) <= evaluate.MAX_INPUT_CHARS
    assert VOCAB.unk_id not in VOCAB.encode(factored)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(factored=data_factored_sides, data=st.data())
def test_data_spelling_is_accepted_unchanged_even_with_spaces(factored, data):
  tokens = algebra.tokenize(factored)[:-1]  # without the end marker
  spaces = data.draw(st.lists(st.sampled_from(["", " ", "\t", "  "]), min_size=len(tokens) + 1,
                              max_size=len(tokens) + 1))
  spaced = spaces[0] + "".join(token.text + space for token, space in zip(tokens, spaces[1:]))
  assert evaluate.check_expression(spaced, VOCAB) == factored


@pytest.mark.parametrize("text, expected", [
    ("(2*k+29)*(k-15)", "(k-15)*(2*k+29)"),
    ("k*k", "k**2"),
    ("(3-sin(x))*sin(x)", "(3-sin(x))*sin(x)"),
    ("sin(x)*(3-sin(x))", "(3-sin(x))*sin(x)"),
])
def test_other_spellings_are_rewritten_as_the_data_spells_them(text, expected):
  assert evaluate.check_expression(text, VOCAB) == expected


@pytest.mark.parametrize("text, reason", [
    ("(k-15)*(2*k+29", "missing ')'"),
    ("(k-15)*(2*x+29)", "mixed units 'k' and 'x'"),
    ("k**3", "exponent 3"),
    ("(k-15)**2**2", "chained exponents"),
    ("sin(k)*k", "mixed units 'sin(k)' and 'k'"),
    ("", "empty input"),
    (" \t ", "empty input"),
    ("k+1", "found a sum"),
    ("(k-1 5)*(2*k+29)", "expected ')' but found '5'"),
    ("(k+1)*(k+2)*(k+3)", "not a product of two linear factors"),
    ("0*k*(k+1)", "not a product of two linear factors"),
    ("(k-1)*(k+\x1b[2J1)", "unknown token '\\x1b'"),
    ("(k\u22121)*(k+1)", "unknown token '\u2212'"),
    ("(99999999*k-99999999)*(k+99999999)", "longer than any factored side"),
    ("(" * 1_000_000, "1,000,000 characters is too long"),
])
def test_near_misses_are_refused_with_the_reason(text, reason):
  with pytest.raises(evaluate.InputError) as refused:
    evaluate.check_expression(text, VOCAB)
  assert reason in str(refused.value)
  assert str(refused.value).isprintable()


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
  decoder = decode.Decoder(graphdef, params, VOCAB, mesh, max_len=16, buckets=(8, 16))
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
  decoder = decode.Decoder(None, None, VOCAB, sharding.make_mesh(), max_len=32)
  factored = [line.split("=")[0] for line in generate.generate_lines(300, seed=0)]
  source_ids = VOCAB.encode_batch(factored, 32)
  full = decoder.batches(source_ids, 4096)
  assert len(full) == sum(count > 0 for count in full.bucket_counts)  # one batch per bucket
  assert sum(full.batch_sizes) < 2 * 300  # not 4096 * (32 / 12 + 32 / 16 + 32 / 20 + 1)
  for count, size in zip(full.bucket_counts, full.batch_sizes):
    assert size >= count
  for batch_size in (8, 64, 256):
    expected = input_pipeline.num_eval_batches(source_ids, np.zeros_like(source_ids),
                                               batch_size=batch_size, buckets=decoder.buckets)
    assert len(decoder.batches(source_ids, batch_size)) == expected


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
  assert rows[0] == ["input", "target", "prediction", "correct"]
  assert all(len(row) == 4 for row in rows)
  return rows[1:]


def check_report(stdout, metrics, num_examples):
  """The printed report ends as the reference's did and agrees with metrics.json."""
  lines = stdout.splitlines()
  assert re.fullmatch(r"Final Score = [01]\.\d{4}", lines[-1]), lines[-1]
  assert lines[-1] == f"Final Score = {metrics['exact_match']:.4f}"
  assert lines[-2] == f"Number of Examples: {num_examples}"
  assert lines[-3] == f"Number Correct: {metrics['num_correct']}"
  assert metrics["num_examples"] == num_examples
  for field in ("Input: ", "Target: ", "Predicted: ", "score: "):
    assert sum(line.startswith(field) for line in lines) == 5  # examples_to_print


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
  model = inference.restore_for_inference(tiny_config(data_dir), str(workdir))
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=model.model_cfg.max_len, buckets=(model.model_cfg.max_len,))
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


def test_predict_mode_reads_standard_input_line_by_line(tiny_run, expand_in_process):
  stdin = (b"(k-15)*(2*k+29)\n\n\xff\xfe\nk**3\n" + b"(" * 100_000 + b"\n"
           + b" sin(k) * ( 3 - sin(k) )\r\n")
  result = run_main(tiny_run, "--mode=predict", stdin=stdin)
  stderr = result.stderr.decode()
  assert result.returncode == 1
  assert "Traceback" not in stderr
  assert len(result.stdout.decode().splitlines()) == 2
  errors = stderr.splitlines()
  assert len(errors) == 3 and all(line.startswith("error: ") for line in errors), errors
  assert "exponent 3" in errors[1] and "too long" in errors[2]
  assert result.stdout.decode().splitlines() == [expand_in_process("(k-15)*(2*k+29)"),
                                                 expand_in_process("(3-sin(k))*sin(k)")]
