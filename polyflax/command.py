r"""Trains, evaluates or queries a polyflax model.

  python main.py --config configs/default.py --workdir runs/red
  python main.py --config configs/default.py --workdir runs/red --mode=evaluate
  python main.py --config configs/cpu.py --workdir checkpoints/cpu --mode=predict --expr "(k-15)*(2*k+29)"
  python main.py --config configs/cpu.py --workdir checkpoints/cpu --mode=predict --tsv < exprs.txt
  python main.py --config configs/default.py --workdir runs/red --mode=export \
      --config.export.dir=checkpoints/red

Flags:
  --config FILE         the experiment config, a file of configs/ (required)
  --config.FIELD=VALUE  overrides one of its fields, e.g. --config.batch_size=256
  --workdir DIR         the run's folder: checkpoints, logs, evaluation (required)
  --mode MODE           train (default): trains the run, or resumes it
                        evaluate: scores the best checkpoint on the test split
                        predict: expands --expr, or each line of standard input
                        export: writes the model alone to --config.export.dir
  --expr TEXT           predict: one factored expression
  --tsv                 predict: writes `input<TAB>output<TAB>confidence` lines
evaluate and predict also take an exported model folder as --workdir.

Configs (configs/; their measured times and scores are in docs/results.md):
  default.py                the reference's recipe (red)
  orange.py                 red at batch 256
  best.py                   the accuracy recipe for one GPU
  cpu.py                    the recipe for a 2-core CPU (the shipped checkpoints/cpu)
  tiny.py                   the smallest model, for tests and smoke runs

predict expands products of two linear factors in the data's range, written
(a*u+b)*(c*u+d) with a, c in -9..8 (not 0) and b, d in -32..31; each input
line gets one output line: the expansion, `error: ...` (also on standard
error, with the line number), or an empty line for an empty one.

Exit status: 0 done; 1 predict refused an input (and answered the others),
or the training loss was not finite; 2 a config, data file, checkpoint or
workdir that cannot be used, with one line `error: ...` (see polyflax/cli.py).
Training stops cleanly on SIGTERM or Ctrl-C: it saves a checkpoint at the
current step and exits with status 128 + the signal (143, 130); running the
same command again resumes from it, as it does after a crash or kill -9.

Installed (pip install .), the same command is `polyflax --config ...`.
"""

import re
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from polyflax import allocator

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/); --config.FIELD=VALUE overrides a field.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the run: checkpoints, logs, evaluation.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict", "export"],
                  "What to do: train, evaluate, predict or export.")
flags.DEFINE_string("expr", None, "predict: one factored expression (default: read stdin).")
flags.DEFINE_bool("tsv", False, "predict: write input<TAB>output<TAB>confidence lines (no header).")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """Parses the flags; a --config file giving no config, or an unknown field: one error line, 2.

  Other flag errors keep absl's message and status 1.
  """
  _check_config_file(argv)
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    # ml_collections raises these (not a flags error) for an unknown field.
    texts, cause = [], error
    while isinstance(cause, (AttributeError, KeyError)):
      texts.append(str(cause.args[0]) if cause.args else "")
      cause = cause.__context__
    field = texts[-1].strip("'\"")  # the innermost KeyError holds the bare name
    overrides = [arg[2:].split("=", 1)[0] for arg in argv[1:] if arg.startswith("--config.")]
    flag = next((o for o in overrides if field in o.split(".")[1:]), None)
    hint = next((m.group(0) for m in map(re.compile(r"Did you mean [^?]*\?").search, texts)
                 if m), None)
    print(f"error: --{flag or 'config'}: no such field in the config"
          + (f" ({hint})" if hint else "")
          + "; the --config file lists the fields", file=sys.stderr)
    sys.exit(2)


def _check_config_file(argv):
  """Exits with one error line, status 2, if the --config file gives no config.

  Run before absl parses the flags: ml_collections would report a missing
  file only when the config is first used, a syntax error or a failing
  get_config() as a traceback, and a file without get_config() as an
  unknown field (config_files.check_file).
  """
  spec = None  # the last --config given, as absl reads it
  for arg, following in zip(argv, argv[1:] + [""]):
    if re.fullmatch("--?config", arg) or re.match("--?config=", arg):
      spec = arg.split("=", 1)[1] if "=" in arg else following
  if spec is None:
    return
  from polyflax import config_files  # pylint: disable=g-import-not-at-top
  try:
    config_files.check_file(spec)
  except config_files.ConfigFileError as error:
    print(f"error: --config {error}", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  try:
    from polyflax import cli  # pylint: disable=g-import-not-at-top
    return cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, expr=FLAGS.expr, tsv=FLAGS.tsv)
  except KeyboardInterrupt:  # Ctrl-C before training took over SIGINT: nothing to save
    print("interrupted", file=sys.stderr)
    return 128 + signal.SIGINT



def run():
  """The command: `polyflax ...`, `python -m polyflax ...` and `python main.py ...` all run this."""
  # First, before jax is loaded: maybe start again under tcmalloc (polyflax/allocator.py).
  allocator.use_tcmalloc()
  # absl's --help prints the main module's docstring: the same text for every entry point.
  sys.modules["__main__"].__doc__ = __doc__
  app.run(main, flags_parser=parse_flags)
