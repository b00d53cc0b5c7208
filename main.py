"""Trains, evaluates or queries a polyflax model.

  python main.py --config configs/default.py --workdir runs/red
  python main.py --config configs/default.py --workdir runs/red --mode=evaluate
  python main.py --config configs/default.py --workdir runs/red --mode=predict --expr "(k-15)*(2*k+29)"

Any config field can be overridden, e.g. --config.batch_size=256.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the run: checkpoints, logs, evaluation.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict"], "What to do.")
flags.DEFINE_string("expr", None, "predict: one factored expression (default: read stdin).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  from polyflax import cli  # pylint: disable=g-import-not-at-top
  return cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, expr=FLAGS.expr)


if __name__ == "__main__":
  app.run(main)
