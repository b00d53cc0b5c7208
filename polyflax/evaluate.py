"""Evaluating a run's workdir, or an exported model folder, on a test file.

`evaluate_workdir` restores the parameters of a run's best checkpoint (or of
an exported model folder), decodes a file of `factored=expanded` lines with
the cached decoder (greedy or beam), scores them with `scoring.score`,
prints a few examples, a table of the score by row group, one by the size
of a two-binomial row's linear coefficient, exact match by confidence and
what the model's confidence threshold flags (`calibration.py`), and the
score as the reference did, and writes the predictions, `metrics.json` and a
TensorBoard event file.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from typing import Sequence

import jax
import ml_collections
import tqdm

from polyflax import calibration
from polyflax import compile_cache
from polyflax import config_checks
from polyflax import data as data_lib
from polyflax import decode
from polyflax import inference
from polyflax import input_pipeline
from polyflax import run_record
from polyflax import scoring
from polyflax import workdir as workdir_lib


def resolve_test_file(config: ml_collections.ConfigDict) -> str:
  """`config.eval.test_file`, or by default ('') the test split of the run's data folder.

  `config` is the run's config (`workdir.run_config`), so its data
  fields are those the run was trained on. Evaluation never makes data: a
  missing split is a FileNotFoundError that says how to make it.
  """
  if config.eval.test_file:
    return config.eval.test_file
  test_path = data_lib.split_paths(config.data_dir)["test"]
  if not test_path.exists():
    raise FileNotFoundError(
        f"no test split {test_path}: make the run's splits with `"
        + data_lib.split_command(config.data_dir, config.data_seed, config.generated_size)
        + "`, or name a file with --config.eval.test_file=FILE")
  return str(test_path)


def _training_lines(config: ml_collections.ConfigDict, record: run_record.RunRecord,
                    pairs: Sequence[tuple[str, str]]) -> tuple[str, set[str] | None]:
  """What the model trained on, and which test lines it holds (None: unknown).

  Returns (description, seen): the training split's path, or how many
  epochs of how many generated lines; and the lines of `pairs` among those
  the run's training stream had served at the checkpoint's saved position
  (`input_pipeline.trained_lines`, the stream made again from `config`, the
  run's, on the devices the record names): exactly the lines it trained on,
  a partial last epoch, remainders left out of an epoch and the rare extra
  chunks of a generated epoch included. Only the lines of `pairs` are
  kept, so the set stays small whatever the stream's length.
  """
  train_path = data_lib.split_paths(config.data_dir)["train"]
  if config.train_data != "generated" and not train_path.exists():
    return f"no training split at {train_path}", None
  try:
    device_count = int(record.devices.split(" x ")[0])  # run_record.devices: "8 x NVIDIA H200"
  except ValueError:
    return f"the checkpoint does not say how many devices trained it ({record.devices!r})", None
  try:
    trained = input_pipeline.trained_lines(config, data_lib.split_paths(config.data_dir),
                                           record.iterator, device_count=device_count)
  except data_lib.DataError as error:
    return f"the training split cannot be read ({error})", None
  except ValueError as error:  # e.g. a state of another seed or kind of stream
    return f"the checkpoint's data position does not fit the config ({error})", None
  test_lines = {f"{factored}={expanded}" for factored, expanded in pairs}
  seen = set()
  for lines in tqdm.tqdm(trained, desc="training lines", unit="epoch",
                         disable=jax.process_index() != 0, file=sys.stderr):
    seen.update(test_lines.intersection(lines))
  if config.train_data != "generated":
    return str(train_path), seen
  epochs = len(trained)
  return (f"generated lines: {epochs} epoch{'' if epochs == 1 else 's'} of "
          f"{trained.examples_per_epoch:,} (data seed {config.data_seed})", seen)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Scores the best checkpoint of `workdir` on the test file; returns the metrics.

  Every process decodes; the first prints, writes `predictions.tsv`,
  `metrics.json` and TensorBoard scalars (`test/...`) into
  `config.eval.output_dir` (default: `default_output_dir`).
  """
  config_checks.check_config(config)
  eval_cfg = config.eval
  is_main = jax.process_index() == 0
  run_config = workdir_lib.run_config(config, workdir)
  test_file = resolve_test_file(run_config)  # before the restore: a missing file is quick to tell
  model = inference.restore_for_inference(config, workdir)
  max_len = model.model_cfg.max_len
  pairs = data_lib.read_pairs(test_file, skip_bad=config.skip_bad_lines).pairs
  if eval_cfg.limit and eval_cfg.limit > 0:
    pairs = pairs[: eval_cfg.limit]
  method = "greedy" if eval_cfg.beam_size <= 1 else (
      f"beam {eval_cfg.beam_size}, length penalty {eval_cfg.length_penalty}")
  if is_main:
    print(f"evaluating {model.source} (step {model.step}) on {len(pairs):,} lines of "
          f"{test_file} ({method})", flush=True)
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=max_len, beam_size=eval_cfg.beam_size,
                           length_penalty=eval_cfg.length_penalty,
                           batching=input_pipeline.batching(config, model.mesh))
  source_ids = model.vocab.encode_batch([factored for factored, _ in pairs], max_len)
  if is_main:
    print(f"compiling the decoder (compilation cache: {compile_cache.location()})", flush=True)
  compile_seconds = decoder.warm_up(source_ids, batch_size=eval_cfg.batch_size)
  start = time.perf_counter()
  predictions, confidences = decoder.decode_ids_with_confidence(
      source_ids, batch_size=eval_cfg.batch_size, progress=True)
  decode_seconds = time.perf_counter() - start

  trained_on, seen_lines = _training_lines(run_config, model.record, pairs)
  if seen_lines is None and is_main:
    print(f"{trained_on}: no seen/unseen figures", file=sys.stderr)
  metrics = scoring.score(pairs, predictions, seen_lines)
  metrics.update(confidence_metrics(confidences, [predicted == expanded for predicted, (_, expanded)
                                                  in zip(predictions, pairs)],
                                    model.confidence_threshold))
  metrics.update(
      compile_seconds=compile_seconds,
      decode_seconds=decode_seconds,
      decode_sequences_per_second=len(pairs) / max(decode_seconds, 1e-9),
      beam_size=eval_cfg.beam_size,
      length_penalty=eval_cfg.length_penalty,
      step=model.step,
      checkpoint=model.source,
      test_file=test_file,
      trained_on=trained_on if seen_lines is not None else None,
      devices=run_record.devices(),
      process_count=jax.process_count(),
  )
  if not is_main:
    return metrics

  output_dir = eval_cfg.output_dir or default_output_dir(workdir)
  os.makedirs(output_dir, exist_ok=True)
  write_predictions(os.path.join(output_dir, "predictions.tsv"), pairs, predictions, confidences)
  with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
    f.write("\n")
  write_tensorboard(output_dir, model.step, metrics)

  for (factored, expanded), predicted in itertools.islice(zip(pairs, predictions),
                                                          eval_cfg.examples_to_print):
    print(f"Input: {factored}\nTarget: {expanded}\nPredicted: {predicted}\n"
          f"score: {int(predicted == expanded)}\n")
  print(_summary(metrics))
  print(f"decoded {len(pairs):,} sequences in {decode_seconds:.2f} s "
        f"({metrics['decode_sequences_per_second']:,.0f} sequences/s; "
        f"compilation {compile_seconds:.1f} s apart) on {metrics['devices']}")
  print(f"wrote {output_dir}/predictions.tsv and {output_dir}/metrics.json")
  print(f"Number Correct: {metrics['num_correct']}")
  print(f"Number of Examples: {metrics['num_examples']}")
  print(f"Final Score = {metrics['exact_match']:.4f}", flush=True)
  return metrics


def default_output_dir(workdir: str) -> str:
  """WORKDIR/eval for a training run; runs/eval/NAME for an exported model folder.

  A shipped model folder (checkpoints/NAME) stays as it was shipped.
  """
  if workdir_lib.is_exported(workdir):
    return os.path.join("runs", workdir_lib.EVAL_DIR, os.path.basename(os.path.abspath(workdir)))
  return os.path.join(workdir, workdir_lib.EVAL_DIR)


def confidence_metrics(confidences: Sequence[float], correct: Sequence[bool],
                       threshold: float | None) -> dict:
  """Exact match by confidence bin, and what `threshold` flags (the model's; None: none).

  Returns:
    `confidence_<bin>_lines`, `confidence_<bin>_wrong` and
    `confidence_<bin>_exact_match` for each bin of `calibration.bin_figures`
    that holds a line; `confidence_threshold`; with a threshold, `flagged`,
    `flagged_share`, `wrong_flagged` and `wrong_flagged_share` of
    `calibration.flag_figures`.
  """
  metrics: dict = {"confidence_threshold": threshold}
  for label, lines, wrong in calibration.bin_figures(confidences, correct):
    metrics.update({f"confidence_{label}_lines": lines, f"confidence_{label}_wrong": wrong,
                    f"confidence_{label}_exact_match": 1 - wrong / lines})
  if threshold is not None:
    figures = calibration.flag_figures(confidences, correct, threshold)
    metrics.update({name: figures[name] for name in ("flagged", "flagged_share", "wrong_flagged",
                                                     "wrong_flagged_share")})
  return metrics


def _table(title: str, rows: Sequence[tuple[str, int, int]]) -> list[str]:
  """Lines of a table: `title` and lines, wrong, exact match for each (name, lines, wrong) row."""
  width = max([len(title)] + [len(name) for name, _, _ in rows])
  lines = [f"{title:<{width}}  {'lines':>9}  {'wrong':>7}  exact match"]
  for name, count, wrong in rows:
    lines.append(f"{name:<{width}}  {count:>9,}  {wrong:>7,}  "
                 f"{(count - wrong) / max(count, 1):>11.4f}")
  return lines


def _group_row(metrics: dict, group: str, name: str) -> tuple[str, int, int]:
  """(name, lines, wrong) of a group of `scoring.score`."""
  count = metrics[f"num_examples_{group}"]
  return name, count, round(count * (1 - metrics[f"exact_match_{group}"]))


def _summary(metrics: dict) -> str:
  """Equivalence, tables of the score by group, by |s| and by confidence, the flags, the failures.

  The |s| bins of `scoring.LINEAR_SIZE_BINS` have their own table, in bin order.
  """
  size_bins = [(group, label) for group, label in scoring.LINEAR_SIZE_BINS
               if f"num_examples_{group}" in metrics]
  size_groups = {group for group, _ in scoring.LINEAR_SIZE_BINS}
  groups = sorted(name[len("num_examples_"):] for name in metrics
                  if name.startswith("num_examples_")
                  and name[len("num_examples_"):] not in size_groups)
  lines = [f"algebraically equivalent: {metrics['equivalence']:.4f}"]
  lines += _table("group", [("all", metrics["num_examples"], metrics["num_failures"])] + [
      _group_row(metrics, group, group) for group in groups])
  if size_bins:
    lines += _table("linear coefficient |s|, two-binomial rows",
                    [_group_row(metrics, group, f"|s| {label}") for group, label in size_bins])
  labels = [calibration.bin_label(index) for index in range(len(calibration.BIN_EDGES) + 1)]
  bins = [(label, metrics[f"confidence_{label}_lines"], metrics[f"confidence_{label}_wrong"])
          for label in labels if f"confidence_{label}_lines" in metrics]
  if bins:
    lines += _table("confidence", bins)
  threshold = metrics.get("confidence_threshold")
  if threshold is None and bins:
    lines.append("no confidence threshold in the model's card: no answer flagged")
  elif threshold is not None:
    share_of_wrong = metrics["wrong_flagged_share"]
    lines.append(f"confidence threshold {threshold:.6f} (the model's card) flags "
                 f"{metrics['flagged']:,} answers ({metrics['flagged_share']:.2%} of all) and "
                 f"{metrics['wrong_flagged']:,} of the {metrics['num_failures']:,} wrong ones"
                 + ("" if share_of_wrong is None else f" ({share_of_wrong:.1%})"))
  failures = [f"{kind} {metrics['failures_' + kind]:,}" for kind in scoring.FAILURE_KINDS
              if metrics["failures_" + kind]]
  if failures:
    lines.append(f"failures ({metrics['num_failures']:,}): " + ", ".join(failures))
  return "\n".join(lines)


def write_predictions(path: str, pairs: Sequence[tuple[str, str]],
                      predictions: Sequence[str], confidences: Sequence[float]) -> None:
  """A TSV with a header: input, target, prediction, correct (1 or 0), confidence."""
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write("input\ttarget\tprediction\tcorrect\tconfidence\n")
    for (factored, expanded), predicted, confidence in zip(pairs, predictions, confidences):
      f.write(f"{factored}\t{expanded}\t{predicted}\t{int(predicted == expanded)}\t"
              f"{confidence:.6f}\n")


def write_tensorboard(logdir: str, step: int, metrics: dict) -> None:
  """The numeric metrics as `test/<name>` scalars at the checkpoint's step."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  with SummaryWriter(logdir) as writer:
    for name, value in sorted(metrics.items()):
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        writer.add_scalar(f"test/{name}", value, step)
