"""Levers of a recipe compared at equal steps: a config file, and named arms of overrides.

  python bench/compare_levers.py COMPARISON [ARM ...] [--runs DIR] [--inputs DIR]
  python bench/compare_levers.py cpu_2026_12_01 --dry-run   # each arm's commands; runs nothing
  python bench/lever_table.py runs/levers                   # the table of the arms run

A comparison (`COMPARISONS`) is a config file, overrides common to all its
arms (the length and validation of the short runs, and the config file's
fields as they stood when the comparison was measured), and named arms, each
a list of `--config.FIELD=VALUE` overrides written out in full: every arm
sets every field that any arm of the comparison changes. So an arm trains the
same thing whatever the config file holds today, and its lever is the fields
where it differs from the comparison's base arm.

Each arm, one after the other, trains with
`python main.py --config CONFIG COMMON... ARM... --config.data_dir=INPUTS
--workdir RUNS/ARM`, then is scored by greedy decoding of the first 20,000
lines of the generated validation split (INPUTS/val_set.txt; never real
lines). RUNS then holds, per arm: ARM/ (the run), ARM.train.log,
ARM.eval.log, ARM.val20k/ (the evaluation: metrics.json, predictions) and
ARM.json (its overrides, its lever, both commands, their exit statuses and
wall-clock seconds), which bench/lever_table.py reads. The commands run with
the interpreter PYTHON names, as scripts/gpu_runs.sh's do, else with this one.

--rehearse runs the same commands on configs/tiny.py, cut to a few steps by
overrides after the arm's own: it checks the runner and every arm's
overrides in a few minutes, and measures nothing.

Needs the generated splits in INPUTS (`python -m polyflax.data split
--inputs inputs --seed 0 --size 1000000`). Run it on an otherwise idle
machine, in the background:
`nohup nice -n 5 python bench/compare_levers.py cpu_2026_12_01 > runs/levers.log 2>&1 &`.
Exit status: 0 every arm trained and was scored; 1 some arm's training or
evaluation failed (the other arms still ran); 2 an unknown comparison or
arm, an override of a field the config lacks, or no validation split.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time
from typing import NamedTuple, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
# What --rehearse trains instead of the comparison's config file, and the
# overrides it puts after every arm's: the tiny model for a few steps.
REHEARSAL_CONFIG = "configs/tiny.py"
REHEARSAL_OVERRIDES = ("--config.max_steps=4",)
EVALUATION_LINES = 20_000  # of the validation split, decoded greedily per arm
_OVERRIDE_RE = re.compile(r"--config\.([A-Za-z_][\w.]*)=(\S+)")
# The lines of a training log worth repeating in the runner's output.
_LOG_LINE_RE = re.compile(r"^(model:|compiled|step \d+ )")


class Comparison(NamedTuple):
  """A config file, overrides common to every arm, and the arms (the first is the base)."""
  about: str  # one line: what the comparison measures, and when
  config: str  # the config file every arm starts from
  common: tuple[str, ...]  # overrides of every arm
  arms: dict[str, tuple[str, ...]]  # each arm's overrides; every arm sets the same fields

  @property
  def base(self) -> str:
    return next(iter(self.arms))


COMPARISONS = {
    # docs/cpu_recipe.md's table. configs/cpu.py as it stood on 2026-12-01
    # (digits as printed, the data's own mix, the whole 760,000-line train
    # split an epoch), cut to 7,500 steps with the cosine ending there.
    # lr3 was stopped early, b32 never ran.
    "cpu_2026_12_01": Comparison(
        about="levers of configs/cpu.py at 7,500 steps, against the recipe of 2026-12-01",
        config="configs/cpu.py",
        common=("--config.train_data=generated", "--config.generated_examples_per_epoch=0",
                "--config.val_check_interval=0.1", "--config.val_exact_match_examples=1024",
                "--config.log_every_steps=500",
                # Fields added to configs/cpu.py after 2026-12-01, at what that day's recipe had.
                "--config.generated_near_cancel_fraction=0.0",
                "--config.generated_edge_fraction=0.0", "--config.partial_products_weight=0.0",
                "--config.val_early_every_examples=0", "--config.val_early_until_examples=0"),
        arms={
            "base": ("--config.digit_order=printed", "--config.generated_cancel_fraction=0.0",
                     "--config.ema_decay=0.0", "--config.learning_rate=2e-3",
                     "--config.batch_size=64", "--config.max_steps=7500", "--config.seed=0"),
            "reversed": ("--config.digit_order=reversed", "--config.generated_cancel_fraction=0.0",
                         "--config.ema_decay=0.0", "--config.learning_rate=2e-3",
                         "--config.batch_size=64", "--config.max_steps=7500", "--config.seed=0"),
            "reversed_seed1": ("--config.digit_order=reversed",
                               "--config.generated_cancel_fraction=0.0", "--config.ema_decay=0.0",
                               "--config.learning_rate=2e-3", "--config.batch_size=64",
                               "--config.max_steps=7500", "--config.seed=1"),
            "ema": ("--config.digit_order=reversed", "--config.generated_cancel_fraction=0.0",
                    "--config.ema_decay=0.999", "--config.learning_rate=2e-3",
                    "--config.batch_size=64", "--config.max_steps=7500", "--config.seed=0"),
            "mix": ("--config.digit_order=reversed", "--config.generated_cancel_fraction=0.05",
                    "--config.ema_decay=0.0", "--config.learning_rate=2e-3",
                    "--config.batch_size=64", "--config.max_steps=7500", "--config.seed=0"),
            "lr3": ("--config.digit_order=reversed", "--config.generated_cancel_fraction=0.0",
                    "--config.ema_decay=0.0", "--config.learning_rate=3e-3",
                    "--config.batch_size=64", "--config.max_steps=7500", "--config.seed=0"),
            # Half the batch for twice the steps: the same examples.
            "b32": ("--config.digit_order=reversed", "--config.generated_cancel_fraction=0.0",
                    "--config.ema_decay=0.0", "--config.learning_rate=2e-3",
                    "--config.batch_size=32", "--config.max_steps=15000", "--config.seed=0"),
        },
    ),
    # docs/cpu_recipe.md's second table: levers for the last errors (the
    # linear coefficient's tails) and for early learning, against
    # configs/cpu.py as it stood on 2026-12-03 (reversed digits, 5% cancelling
    # rows, 640,000 fresh lines an epoch), cut to 300,000 training examples
    # (4,688 steps of 64) with the cosine ending there, validated every
    # 75,000 examples. The deep arm trades width for depth at the same
    # parameter count (937,440 against 997,760), so at about the same cost
    # a step.
    "cpu_2026_12_03": Comparison(
        about="levers of configs/cpu.py at 300,000 examples, against the recipe of 2026-12-03",
        config="configs/cpu.py",
        common=("--config.train_data=generated", "--config.generated_examples_per_epoch=640000",
                "--config.digit_order=reversed", "--config.generated_cancel_fraction=0.05",
                "--config.batch_size=64", "--config.constant_per_batch=examples",
                "--config.lr_schedule=cosine", "--config.lr_final_fraction=0.0",
                "--config.max_steps=4688", "--config.val_check_interval=1.0",
                "--config.val_early_every_examples=75000",
                "--config.val_early_until_examples=300000",
                "--config.val_exact_match_examples=1024", "--config.log_every_steps=500"),
        arms={
            "base": ("--config.generated_near_cancel_fraction=0.0",
                     "--config.generated_edge_fraction=0.0",
                     "--config.partial_products_weight=0.0", "--config.learning_rate=2e-3",
                     "--config.warmup_steps=500", "--config.model.hidden_dim=128",
                     "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                     "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                     "--config.model.decoder_ff_dim=256", "--config.seed=0"),
            # More near-cancelling and edge rows: the two tails, 5% each.
            "mix": ("--config.generated_near_cancel_fraction=0.05",
                    "--config.generated_edge_fraction=0.05",
                    "--config.partial_products_weight=0.0", "--config.learning_rate=2e-3",
                    "--config.warmup_steps=500", "--config.model.hidden_dim=128",
                    "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                    "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                    "--config.model.decoder_ff_dim=256", "--config.seed=0"),
            # The partial products a*d and b*c as an auxiliary target.
            "partial": ("--config.generated_near_cancel_fraction=0.0",
                        "--config.generated_edge_fraction=0.0",
                        "--config.partial_products_weight=0.1", "--config.learning_rate=2e-3",
                        "--config.warmup_steps=500", "--config.model.hidden_dim=128",
                        "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                        "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                        "--config.model.decoder_ff_dim=256", "--config.seed=0"),
            # A higher peak, reached sooner.
            "lr": ("--config.generated_near_cancel_fraction=0.0",
                   "--config.generated_edge_fraction=0.0", "--config.partial_products_weight=0.0",
                   "--config.learning_rate=3e-3", "--config.warmup_steps=250",
                   "--config.model.hidden_dim=128", "--config.model.num_heads=8",
                   "--config.model.encoder_layers=3", "--config.model.decoder_layers=3",
                   "--config.model.encoder_ff_dim=256", "--config.model.decoder_ff_dim=256",
                   "--config.seed=0"),
            # 5+5 layers of width 96 (6 heads of 16, as the base's 8 of 16).
            "deep": ("--config.generated_near_cancel_fraction=0.0",
                     "--config.generated_edge_fraction=0.0",
                     "--config.partial_products_weight=0.0", "--config.learning_rate=2e-3",
                     "--config.warmup_steps=500", "--config.model.hidden_dim=96",
                     "--config.model.num_heads=6", "--config.model.encoder_layers=5",
                     "--config.model.decoder_layers=5", "--config.model.encoder_ff_dim=192",
                     "--config.model.decoder_ff_dim=192", "--config.seed=0"),
            # The base again with another initialisation and batch order: the spread of seeds.
            "base_seed1": ("--config.generated_near_cancel_fraction=0.0",
                           "--config.generated_edge_fraction=0.0",
                           "--config.partial_products_weight=0.0", "--config.learning_rate=2e-3",
                           "--config.warmup_steps=500", "--config.model.hidden_dim=128",
                           "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                           "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                           "--config.model.decoder_ff_dim=256", "--config.seed=1"),
            # A second round, after the first six: partial products again with
            # another seed, with a larger weight, with the row mix on top, and
            # with lr's higher, sooner peak on top, and with deep's shape.
            "partial_seed1": ("--config.generated_near_cancel_fraction=0.0",
                              "--config.generated_edge_fraction=0.0",
                              "--config.partial_products_weight=0.1",
                              "--config.learning_rate=2e-3", "--config.warmup_steps=500",
                              "--config.model.hidden_dim=128", "--config.model.num_heads=8",
                              "--config.model.encoder_layers=3", "--config.model.decoder_layers=3",
                              "--config.model.encoder_ff_dim=256",
                              "--config.model.decoder_ff_dim=256", "--config.seed=1"),
            "partial_w03": ("--config.generated_near_cancel_fraction=0.0",
                            "--config.generated_edge_fraction=0.0",
                            "--config.partial_products_weight=0.3", "--config.learning_rate=2e-3",
                            "--config.warmup_steps=500", "--config.model.hidden_dim=128",
                            "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                            "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                            "--config.model.decoder_ff_dim=256", "--config.seed=0"),
            "partial_mix": ("--config.generated_near_cancel_fraction=0.05",
                            "--config.generated_edge_fraction=0.05",
                            "--config.partial_products_weight=0.1", "--config.learning_rate=2e-3",
                            "--config.warmup_steps=500", "--config.model.hidden_dim=128",
                            "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                            "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                            "--config.model.decoder_ff_dim=256", "--config.seed=0"),
            "partial_lr": ("--config.generated_near_cancel_fraction=0.0",
                           "--config.generated_edge_fraction=0.0",
                           "--config.partial_products_weight=0.1", "--config.learning_rate=3e-3",
                           "--config.warmup_steps=250", "--config.model.hidden_dim=128",
                           "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                           "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                           "--config.model.decoder_ff_dim=256", "--config.seed=0"),
            "deep_partial": ("--config.generated_near_cancel_fraction=0.0",
                             "--config.generated_edge_fraction=0.0",
                             "--config.partial_products_weight=0.1",
                             "--config.learning_rate=2e-3", "--config.warmup_steps=500",
                             "--config.model.hidden_dim=96", "--config.model.num_heads=6",
                             "--config.model.encoder_layers=5", "--config.model.decoder_layers=5",
                             "--config.model.encoder_ff_dim=192",
                             "--config.model.decoder_ff_dim=192", "--config.seed=0"),
            # Second seeds of the first round's single-seed gains, after partial
            # products' second seed came out 0.049 below its first.
            "lr_seed1": ("--config.generated_near_cancel_fraction=0.0",
                         "--config.generated_edge_fraction=0.0",
                         "--config.partial_products_weight=0.0", "--config.learning_rate=3e-3",
                         "--config.warmup_steps=250", "--config.model.hidden_dim=128",
                         "--config.model.num_heads=8", "--config.model.encoder_layers=3",
                         "--config.model.decoder_layers=3", "--config.model.encoder_ff_dim=256",
                         "--config.model.decoder_ff_dim=256", "--config.seed=1"),
            "deep_seed1": ("--config.generated_near_cancel_fraction=0.0",
                           "--config.generated_edge_fraction=0.0",
                           "--config.partial_products_weight=0.0", "--config.learning_rate=2e-3",
                           "--config.warmup_steps=500", "--config.model.hidden_dim=96",
                           "--config.model.num_heads=6", "--config.model.encoder_layers=5",
                           "--config.model.decoder_layers=5", "--config.model.encoder_ff_dim=192",
                           "--config.model.decoder_ff_dim=192", "--config.seed=1"),
            # The candidate for the whole run: partial_lr with the row mix on top.
            "partial_lr_mix": ("--config.generated_near_cancel_fraction=0.05",
                               "--config.generated_edge_fraction=0.05",
                               "--config.partial_products_weight=0.1",
                               "--config.learning_rate=3e-3", "--config.warmup_steps=250",
                               "--config.model.hidden_dim=128", "--config.model.num_heads=8",
                               "--config.model.encoder_layers=3",
                               "--config.model.decoder_layers=3",
                               "--config.model.encoder_ff_dim=256",
                               "--config.model.decoder_ff_dim=256", "--config.seed=0"),
        },
    ),
}


def fields(overrides: Sequence[str]) -> dict[str, str]:
  """{FIELD: VALUE} of `--config.FIELD=VALUE` overrides, in order.

  Raises:
    ValueError: for an override not of that form, or a field set twice.
  """
  result = {}
  for override in overrides:
    match = _OVERRIDE_RE.fullmatch(override)
    if not match:
      raise ValueError(f"{override!r} is not --config.FIELD=VALUE")
    if match[1] in result:
      raise ValueError(f"--config.{match[1]} is set twice")
    result[match[1]] = match[2]
  return result


def check_comparison(comparison: Comparison) -> None:
  """Raises ValueError unless every arm sets the same fields, none of them also common."""
  common = fields(comparison.common)
  base = fields(comparison.arms[comparison.base])
  for arm, overrides in comparison.arms.items():
    arm_fields = fields(overrides)
    if set(arm_fields) != set(base):
      raise ValueError(f"arm {arm} sets {sorted(arm_fields)}, the base {sorted(base)}: "
                       "every arm writes out every field of the comparison")
    if set(arm_fields) & set(common):
      raise ValueError(f"arm {arm} sets common fields {sorted(set(arm_fields) & set(common))}")


def lever(comparison: Comparison, arm: str) -> list[str]:
  """The `FIELD=VALUE`s where `arm` differs from the base arm (none for the base)."""
  base = fields(comparison.arms[comparison.base])
  return [f"{field}={value}" for field, value in fields(comparison.arms[arm]).items()
          if base[field] != value]


def commands(comparison: Comparison, arm: str, runs: pathlib.Path, inputs: pathlib.Path,
             rehearse: bool = False) -> tuple[list[str], list[str]]:
  """The training and the evaluation command of `arm` (run from the repository root)."""
  config = REHEARSAL_CONFIG if rehearse else comparison.config
  overrides = [*comparison.common, *comparison.arms[arm],
               *(REHEARSAL_OVERRIDES if rehearse else ()), f"--config.data_dir={inputs}"]
  python = os.environ.get("PYTHON") or sys.executable
  run = [python, "main.py", "--config", config, *overrides, "--workdir", str(runs / arm)]
  evaluate = [*run, "--mode=evaluate", f"--config.eval.test_file={inputs / 'val_set.txt'}",
              f"--config.eval.limit={EVALUATION_LINES}",
              f"--config.eval.output_dir={runs / f'{arm}.val20k'}"]
  return run, evaluate


def config_problem(comparison: Comparison, arm: str, rehearse: bool) -> str | None:
  """Why `arm`'s overrides cannot be applied to its config file (None: they can)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from polyflax import config_files  # pylint: disable=g-import-not-at-top
  config = REHEARSAL_CONFIG if rehearse else comparison.config
  try:
    config_files.load(REPO / config, [*comparison.common, *comparison.arms[arm]])
  except (AttributeError, KeyError) as error:  # ml_collections: a field the config lacks
    texts, cause = [], error
    while isinstance(cause, (AttributeError, KeyError)):
      texts.append(str(cause.args[0]) if cause.args else "")
      cause = cause.__context__
    name = texts[-1].splitlines()[0].strip("'\"")  # the innermost error holds the bare name
    hint = next((m[0] for m in map(re.compile(r"Did you mean [^?]*\?").search, texts) if m), None)
    return f"arm {arm}: {config} has no field {name}" + (f" ({hint})" if hint else "")
  except (ValueError, flags.Error) as error:  # a value of the wrong type
    return f"arm {arm}: {config}: {str(error).splitlines()[0]}"
  return None


def _run(command: list[str], log: pathlib.Path) -> tuple[int, int]:
  """Runs `command` from the repository root into `log`; returns (exit status, seconds)."""
  start = time.monotonic()
  with open(log, "w", encoding="utf-8") as out:
    status = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            check=False).returncode
  return status, round(time.monotonic() - start)


def run_arm(comparison: Comparison, name: str, arm: str, runs: pathlib.Path,
            inputs: pathlib.Path, rehearse: bool) -> bool:
  """Trains and scores `arm`, recording both in RUNS/ARM.json; whether both succeeded."""
  train, evaluate = commands(comparison, arm, runs, inputs, rehearse)
  record = {
      "comparison": name, "arm": arm, "position": list(comparison.arms).index(arm),
      "rehearsal": rehearse, "config": REHEARSAL_CONFIG if rehearse else comparison.config,
      "common": list(comparison.common), "overrides": list(comparison.arms[arm]),
      "lever": lever(comparison, arm),
      "train": {"command": train, "log": f"{arm}.train.log"},
      "evaluate": {"command": evaluate, "log": f"{arm}.eval.log",
                   "output_dir": f"{arm}.val20k"},
  }
  record_path = runs / f"{arm}.json"
  record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
  print(f"=== {arm}: {' '.join(record['lever']) or '(the base)'} "
        f"(training; its log: {runs / record['train']['log']})", flush=True)
  for stage in ("train", "evaluate"):
    status, seconds = _run(record[stage]["command"], runs / record[stage]["log"])
    record[stage].update(status=status, seconds=seconds)
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log = (runs / record[stage]["log"]).read_text(encoding="utf-8", errors="replace")
    if stage == "train":
      for line in (line.strip() for line in log.replace("\r", "\n").splitlines()):
        if _LOG_LINE_RE.match(line):
          print(re.sub(r", val (token_accuracy|sequence_accuracy) [0-9.]+", "", line))
      print(f"{arm}: training exited {status} after {seconds} s", flush=True)
    else:
      last = log.strip().splitlines()[-1] if log.strip() else ""
      print(f"{arm}: {EVALUATION_LINES:,} validation lines, greedy: {last}", flush=True)
  return record["train"]["status"] == 0 and record["evaluate"]["status"] == 0


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("comparison", help=f"one of: {', '.join(COMPARISONS)}")
  parser.add_argument("arms", nargs="*", help="the arms to run, in order (default: all)")
  parser.add_argument("--runs", default="runs/levers", help="folder of the arms' runs and records")
  parser.add_argument("--inputs", default="inputs", help="folder of the generated splits")
  parser.add_argument("--dry-run", action="store_true",
                      help="print each arm's lever and commands, check its overrides, run nothing")
  parser.add_argument("--rehearse", action="store_true",
                      help=f"the same commands on {REHEARSAL_CONFIG} for a few steps")
  args = parser.parse_args(argv)
  comparison = COMPARISONS.get(args.comparison)
  if comparison is None:
    print(f"error: no comparison {args.comparison!r} (there are: {', '.join(COMPARISONS)})",
          file=sys.stderr)
    return 2
  check_comparison(comparison)
  arms = args.arms or list(comparison.arms)
  unknown = [arm for arm in arms if arm not in comparison.arms]
  if unknown:
    print(f"error: {args.comparison} has no arm {', '.join(unknown)} "
          f"(its arms: {', '.join(comparison.arms)})", file=sys.stderr)
    return 2
  problems = [p for arm in arms if (p := config_problem(comparison, arm, args.rehearse))]
  if problems:
    print(f"error: {problems[0]}", file=sys.stderr)
    return 2
  runs, inputs = pathlib.Path(args.runs).absolute(), pathlib.Path(args.inputs).absolute()
  if args.dry_run:
    print(f"{args.comparison}: {comparison.about}")
    for arm in arms:
      train, evaluate = commands(comparison, arm, runs, inputs, args.rehearse)
      print(f"{arm}: lever {' '.join(lever(comparison, arm)) or '(the base)'}")
      print(f"{arm}: train {shlex.join(train)}")
      print(f"{arm}: evaluate {shlex.join(evaluate)}")
    return 0
  if not (inputs / "val_set.txt").exists():
    print(f"error: no validation split {inputs / 'val_set.txt'}: make the splits with "
          f"`python -m polyflax.data split --inputs {args.inputs} --seed 0 --size 1000000`",
          file=sys.stderr)
    return 2
  runs.mkdir(parents=True, exist_ok=True)
  print(f"{args.comparison}: {comparison.about}; arms {', '.join(arms)} into {runs}", flush=True)
  succeeded = [run_arm(comparison, args.comparison, arm, runs, inputs, args.rehearse)
               for arm in arms]
  return 0 if all(succeeded) else 1


if __name__ == "__main__":
  sys.exit(main())
