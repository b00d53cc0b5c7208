"""bench/compare_levers.py: its comparisons, its plan, a rehearsal; bench/lever_table.py on it."""

import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax

from polyflax import config_files, data

REPO = pathlib.Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("compare_levers",
                                               REPO / "bench" / "compare_levers.py")
compare_levers = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(compare_levers)
REPORTED = compare_levers.COMPARISONS["cpu_2026_12_01"]


TODAYS = compare_levers.COMPARISONS["cpu_2026_12_03"]


def reported_levers(section: str) -> dict[str, str]:
  """{arm: lever} of the table in `section` (a "## " heading) of docs/cpu_recipe.md."""
  text = (REPO / "docs" / "cpu_recipe.md").read_text(encoding="utf-8")
  text = text[text.index(f"\n## {section}\n"):]
  text = text[:text.find("\n## ", 1)]
  rows = re.findall(r"^\| (\w+) \| ([^|]+) \| \*\*", text, re.M)
  return {arm: lever.strip() for arm, lever in rows}


def test_each_reported_arm_differs_from_the_base_by_the_lever_the_docs_name():
  levers = reported_levers("The table")
  assert set(levers) == {"base", "reversed", "reversed_seed1", "ema", "mix"}
  for arm, lever in levers.items():
    if arm != "base":
      assert ", ".join(compare_levers.lever(REPORTED, arm)) == lever, arm
  assert compare_levers.lever(REPORTED, "base") == []
  assert compare_levers.lever(REPORTED, "b32") == ["digit_order=reversed", "batch_size=32",
                                                   "max_steps=15000"]
  todays = reported_levers("Levers for the last errors (2026-12-03)")
  assert set(todays) == set(TODAYS.arms) - {"partial_w03"}  # stopped, never scored
  for arm, lever in todays.items():
    assert ", ".join(compare_levers.lever(TODAYS, arm)) == (
        "" if lever == "(the base)" else lever), arm


def test_the_base_is_configs_cpu_py_as_it_was_measured():
  # The recipe of 2026-12-01 that docs/cpu_recipe.md describes. If configs/cpu.py
  # changes one of these, pin the old value in the comparison's common overrides.
  config = config_files.load(REPO / REPORTED.config,
                             [*REPORTED.common, *REPORTED.arms["base"]])
  assert (config.model.hidden_dim, config.model.encoder_ff_dim, config.model.decoder_ff_dim,
          config.model.dropout_rate, config.model.attention_dropout_rate) == (128, 256, 256, 0, 0)
  assert (config.train_data, config.generated_examples_per_epoch, config.generated_size,
          config.generated_cancel_fraction, config.digit_order) == (
              "generated", 0, 1_000_000, 0.0, "printed")
  assert (config.batch_size, config.constant_per_batch, config.learning_rate,
          config.warmup_steps, config.lr_schedule, config.lr_final_fraction,
          config.label_smoothing, config.ema_decay, config.seed) == (
              64, "examples", 2e-3, 500, "cosine", 0.0, 0.0, 0.0, 0)
  assert (config.max_steps, config.val_check_interval, config.val_exact_match_examples) == (
      7500, 0.1, 1024)


def test_todays_base_is_configs_cpu_py_as_it_was_measured():
  # configs/cpu.py of 2026-12-03, cut to 300,032 examples: pinned, so the arms
  # stay these whatever configs/cpu.py becomes.
  config = config_files.load(REPO / TODAYS.config, [*TODAYS.common, *TODAYS.arms["base"]])
  assert (config.model.hidden_dim, config.model.encoder_layers, config.model.decoder_ff_dim,
          config.model.dropout_rate) == (128, 3, 256, 0)
  assert (config.train_data, config.generated_examples_per_epoch, config.digit_order,
          config.generated_cancel_fraction, config.generated_near_cancel_fraction,
          config.generated_edge_fraction, config.partial_products_weight) == (
              "generated", 640_000, "reversed", 0.05, 0.0, 0.0, 0.0)
  assert (config.batch_size, config.learning_rate, config.warmup_steps, config.lr_schedule,
          config.max_steps * config.batch_size, config.val_early_every_examples) == (
              64, 2e-3, 500, "cosine", 300_032, 75_000)
  compare_levers.check_comparison(TODAYS)


def test_every_arm_must_write_out_every_field_of_its_comparison():
  compare_levers.check_comparison(REPORTED)
  short = compare_levers.Comparison(
      about="", config="configs/cpu.py", common=("--config.max_steps=10",),
      arms={"base": ("--config.seed=0", "--config.digit_order=printed"),
            "reversed": ("--config.digit_order=reversed",)})
  with pytest.raises(ValueError, match="every arm writes out every field"):
    compare_levers.check_comparison(short)
  with pytest.raises(ValueError, match="set twice"):
    compare_levers.fields(["--config.seed=0", "--config.seed=1"])



def test_an_override_the_config_lacks_stops_the_runner_before_anything_runs(tmp_path, monkeypatch,
                                                                             capsys):
  typo = compare_levers.Comparison(
      about="", config="configs/cpu.py", common=(),
      arms={"base": ("--config.sede=0",), "seed1": ("--config.sede=1",)})
  monkeypatch.setitem(compare_levers.COMPARISONS, "typo", typo)
  runs = tmp_path / "runs"
  assert compare_levers.main(["typo", "--runs", str(runs), "--inputs", str(tmp_path)]) == 2
  assert capsys.readouterr().err == ("error: arm base: configs/cpu.py has no field sede "
                                     '(Did you mean "seed" instead of "sede"?)\n')
  assert not runs.exists()

def plan(*arguments, env=None):
  """bench/compare_levers.py's result; its commands run with sys.executable unless `env` sets PYTHON."""
  if env is None:
    env = {name: value for name, value in os.environ.items() if name != "PYTHON"}
  return forked_python.run([sys.executable, "bench/compare_levers.py", *arguments], cwd=REPO,
                           capture_output=True, text=True, timeout=300, env=env)


def test_dry_run_lists_each_arms_commands_with_its_overrides_as_declared(tmp_path):
  runs, inputs = tmp_path / "runs", tmp_path / "inputs"
  result = plan("cpu_2026_12_01", "--dry-run", "--runs", str(runs), "--inputs", str(inputs))
  assert result.returncode == 0, result.stderr
  assert not runs.exists()
  listed = {}
  for line in result.stdout.splitlines()[1:]:
    arm, stage, rest = re.match(r"(\w+): (\w+) (.*)", line).groups()
    listed.setdefault(arm, {})[stage] = rest
  assert list(listed) == list(REPORTED.arms)
  for arm, overrides in REPORTED.arms.items():
    train = shlex.split(listed[arm]["train"])
    assert train == [sys.executable, "main.py", "--config", "configs/cpu.py", *REPORTED.common,
                     *overrides, f"--config.data_dir={inputs}", "--workdir", str(runs / arm)]
    assert shlex.split(listed[arm]["evaluate"]) == [
        *train, "--mode=evaluate", f"--config.eval.test_file={inputs / 'val_set.txt'}",
        "--config.eval.limit=20000", f"--config.eval.output_dir={runs / (arm + '.val20k')}"]
    assert listed[arm]["lever"] == (" ".join(compare_levers.lever(REPORTED, arm))
                                    or "(the base)")


def test_an_unknown_arm_or_comparison_is_one_error_line():
  unknown_arm = plan("cpu_2026_12_01", "base", "lr9", "--dry-run")
  assert unknown_arm.returncode == 2
  assert unknown_arm.stderr.strip().splitlines() == [
      "error: cpu_2026_12_01 has no arm lr9 (its arms: "
      "base, reversed, reversed_seed1, ema, mix, lr3, b32)"]
  unknown = plan("gpu", "--dry-run")
  assert (unknown.returncode, unknown.stderr.count("\n")) == (2, 1)
  assert unknown.stderr.startswith("error: no comparison 'gpu'")


@pytest.mark.slow  # trains in subprocesses
def test_rehearsal_trains_each_arm_as_declared_and_the_table_reads_it(tmp_path):
  runs, inputs = tmp_path / "runs", tmp_path / "inputs"
  data.ensure_splits(inputs, 0, generated_size=2000)
  # Its commands forked from the tests' server too (tests/forked_python.py).
  result = plan("cpu_2026_12_01", "base", "mix", "--rehearse", "--runs", str(runs),
                "--inputs", str(inputs), env=dict(os.environ, PYTHON=forked_python.interpreter()))
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
  for arm in ("base", "mix"):
    record = json.loads((runs / f"{arm}.json").read_text())
    assert record["train"]["command"][0] == forked_python.interpreter()
    assert record["overrides"] == list(REPORTED.arms[arm])
    assert record["train"]["command"][2:] == [
        "--config", "configs/tiny.py", *REPORTED.common, *REPORTED.arms[arm],
        "--config.max_steps=4", f"--config.data_dir={inputs}", "--workdir", str(runs / arm)]
    assert (record["train"]["status"], record["evaluate"]["status"]) == (0, 0)
    # The run trained with the arm's values: its config.json says so.
    saved = json.loads((runs / arm / "config.json").read_text())
    for field, value in compare_levers.fields(REPORTED.arms[arm]).items():
      if field != "max_steps":
        assert saved[field] == type(saved[field])(value), field
    assert saved["max_steps"] == 4
  table = subprocess.run([sys.executable, "bench/lever_table.py", str(runs)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
  assert table.returncode == 0, table.stderr
  rows = [line.split(" | ") for line in table.stdout.splitlines()[2:]]
  assert [(row[0], row[1]) for row in rows] == [
      ("| base", "(the base)"), ("| mix", "digit_order=reversed, generated_cancel_fraction=0.05")]
  assert all(row[8] == "4" for row in rows)  # the steps of a rehearsal
