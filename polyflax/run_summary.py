"""What a training run says when it ends: what it reached, where it is, what to run next.

`closing_lines` are the last lines of every training run that leaves a
resumable checkpoint, completed or stopped early (a signal, `stop_at_step`):

  * the steps and epochs done, and the best validation exact match with its
    step (the best validation loss where the run decodes no sample);
  * the checkpoints' folder and the step that evaluation, prediction and
    export read (the best by validation loss);
  * the commands to evaluate, predict and view the run, written with the
    program, config file and workdir of the command that trained it
    (`user_command`);
  * for a completed run whose best exact match is under
    `LEARNED_EXACT_MATCH`, a note that a short run such as configs/tiny.py
    gets no further, and which configs learn the task.

The lines quote no figure but the run's own; what the recipes reach is in
docs/results.md.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Sequence

# The README's example of an input predict expands.
EXAMPLE_EXPR = "(k-15)*(2*k+29)"
# Under this best validation exact match a completed run has not learned the
# task (most of its validation sample is wrong): the note says what does.
LEARNED_EXACT_MATCH = 0.5
# Stands for the config file when the command that trained is not known (a
# run started from Python rather than from the command line).
UNKNOWN_CONFIG = "CONFIG"


def user_command(argv: Sequence[str]) -> tuple[str, str | None]:
  """(program, config file) of the command line `argv`, as typed.

  The program is `polyflax`, `python -m polyflax` or `python PATH/main.py`;
  `python main.py` when `argv` is none of them (a run started from Python).
  The config file is the last `--config` given (None: there is none), with
  any `:ARGS` it passes to `get_config`.
  """
  argv = list(argv) or [""]
  first = argv[0]
  if os.path.basename(first) == "polyflax":
    program = "polyflax"
  elif first.endswith(os.path.join("polyflax", "__main__.py")):
    program = "python -m polyflax"
  elif first.endswith(".py") and os.path.basename(first) == "main.py":
    program = shlex.join(["python", first])
  else:
    program = "python main.py"
  config = None
  for arg, following in zip(argv[1:], argv[2:] + [None]):
    if re.fullmatch("--?config", arg) and following is not None:
      config = following
    elif re.match("--?config=", arg):
      config = arg.split("=", 1)[1]
  return program, config


def _epochs(steps: int, steps_per_epoch: int) -> str:
  return f"{steps / steps_per_epoch:.2f}"


def closing_lines(*, workdir: str, checkpoints_dir: str, step: int, total_steps: int,
                  steps_per_epoch: int, history: Sequence[dict], best_step: int | None,
                  completed: bool, argv: Sequence[str]) -> list[str]:
  """The lines a training run ends with (see the module docstring).

  `history` is the run's validation history (`run_record.history_entry`),
  `best_step` the checkpoint evaluation reads (`CheckpointStore.best_step`),
  `completed` whether the run reached `total_steps`, `argv` the command
  that trained it (`sys.argv`).
  """
  decoded = [entry for entry in history if entry.get("exact_match") is not None]
  validations = f"{len(history)} validation{'' if len(history) == 1 else 's'}"
  if decoded:
    # Of equal exact matches, the lower loss (the checkpoint evaluation reads, often).
    best = max(decoded, key=lambda entry: (entry["exact_match"], -entry["loss"]))
    reached = (f"best validation exact match {best['exact_match']:.4f} at step {best['step']} "
               f"({validations})")
  elif history:
    best = min(history, key=lambda entry: (entry["loss"], entry["step"]))
    reached = (f"best validation loss {best['loss']:.4f} at step {best['step']} "
               f"({validations}, none decoded)")
  else:
    reached = "no validation yet"
  if completed:
    done = f"training done: {step} steps, {_epochs(step, steps_per_epoch)} epochs"
  else:
    done = (f"training stopped at step {step} of {total_steps}, epoch "
            f"{_epochs(step, steps_per_epoch)} of {_epochs(total_steps, steps_per_epoch)}")
  lines = [f"{done}; {reached}"]
  where = f"checkpoints: {checkpoints_dir}"
  if best_step is not None:
    where += (f" (evaluate, predict and export read step {best_step}, the best by validation "
              "loss)" if history else f" (evaluate, predict and export read step {best_step})")
  lines.append(where)
  program, config = user_command(argv)
  command = (f"{program} --config {shlex.quote(config or UNKNOWN_CONFIG)} "
             f"--workdir {shlex.quote(workdir)}")
  lines += [f"evaluate: {command} --mode=evaluate",
            f"predict: {command} --mode=predict --expr \"{EXAMPLE_EXPR}\"",
            f"view: tensorboard --logdir {shlex.quote(workdir)}"]
  if completed and decoded and best["exact_match"] < LEARNED_EXACT_MATCH:
    lines.append("note: an exact match this low is expected of a run this short, such as "
                 "configs/tiny.py (which checks that training works, in seconds); "
                 "configs/cpu.py learns the task on a CPU, configs/default.py on a GPU "
                 "(what each reaches: docs/results.md)")
  return lines
