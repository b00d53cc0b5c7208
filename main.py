"""Trains, evaluates or queries a polyflax model: the `polyflax` command, run from a checkout.

  python main.py --config configs/default.py --workdir runs/red

The flags, their parsing and --help live in polyflax/command.py.
"""

from polyflax import command

if __name__ == "__main__":
  command.run()
