"""`python -m polyflax --config ... --workdir ...`: the polyflax command (see command.py)."""

from polyflax import command

if __name__ == "__main__":
  command.run()
