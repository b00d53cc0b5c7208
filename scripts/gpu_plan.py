"""The GPU runs' stage table, as types, and the plan `scripts/gpu_runs.py --plan` prints from it.

The table itself (each stage's command, expected seconds, needs and shipped
file) is STAGES in scripts/gpu_runs.py; this module only reads it. The plan
walks the stages not yet done through each call's time, as a call would on
the expected seconds, and starts nothing.
"""

from __future__ import annotations

import dataclasses
import pathlib
import textwrap
from typing import Callable, NamedTuple

# Seconds of each call kept at its end for stopping a training (its
# checkpoint), the summary, the plot and the packing.
END_MARGIN = 40
# A stage is not started with less work time than this left in its call.
LEAST_STAGE_SECONDS = 15
# The runs a stage may need trained first.
TRAINED_RUNS = ("red", "orange", "best")


@dataclasses.dataclass(frozen=True)
class Expected:
  """A stage on one machine: what it runs there and the seconds it is expected to take.

  `what`, `why` and `config` are templates: `{runs}`, `{exports}`,
  `{best_min}`, `{best_max}` (and in `why`, this row's seconds) are filled in.
  """
  what: str  # the plan's description of the stage
  start: int  # start-up: processes starting, compiling, evaluating nothing yet
  train: int = 0  # training, which a call's deadline stops and the next call resumes
  after: int = 0  # after training: the evaluations
  bench: int = 0  # best: its training bench, before the start-up
  config: tuple[str, ...] = ()  # the flags of the stage's command: its config
  bench_flags: tuple[str, ...] = ()  # best: the bench's flags after the config
  why: str = ""  # how the seconds were guessed, printed in the plan's notes

  @property
  def before_training(self) -> int:
    return self.bench + self.start


@dataclasses.dataclass(frozen=True)
class Machine:
  """What differs between a lease's GPU machine and the rehearsal on a CPU."""
  rehearsal: bool  # which Expected of each stage applies
  runs: str  # the runs folder unless --runs
  exports: str  # where the models are exported ({runs} filled in)
  budget: int  # a call's deadline in seconds unless --call or --budget says otherwise
  setup: int  # expected seconds of the set-up: carried wheels, imports, device query
  short_limit: int  # seconds a smoke, bench or export command may run before it counts as hung
  eval_limit: int  # the same for an evaluation or the decode bench
  best_seconds: tuple[int, int]  # best's training: at least (else skipped in the call), at most
  real_limit: tuple[str, ...]  # flags of the evaluation on the real lines
  real: tuple[str, ...]  # where the real lines are looked for when --real is not given
  platforms: str  # JAX_PLATFORMS of the commands unless set ("": jax chooses)
  notes: str  # the first lines of the plan's notes ({setup} filled in)


class Ship(NamedTuple):
  """A file of the output folder that a stage makes, and the function that packs it."""
  file: str
  make: Callable  # make(call, stage): writes call.out / file where there is something to ship


@dataclasses.dataclass(frozen=True)
class Stage:
  """One row of the stage table."""
  name: str
  kind: str  # once | train (resumed after a deadline) | best (trains for the time left) | export
  command: Callable  # command(call, stage) runs it; raises gpu_call.Unfinished, Failed, Skipped
  gpu: Expected
  rehearsal: Expected
  needs: str = ""  # the run that must be trained first
  ships: Ship | None = None


def expected_on(machine: Machine, stages: list[Stage], values: dict[str, object]
                ) -> dict[str, Expected]:
  """Each stage's Expected on `machine`, its templates filled in from `values` and its seconds."""
  result = {}
  for stage in stages:
    expected = stage.rehearsal if machine.rehearsal else stage.gpu
    fill = dict(values, **{field: getattr(expected, field)
                           for field in ("start", "train", "after", "bench")})
    result[stage.name] = dataclasses.replace(
        expected, what=expected.what.format(**fill), why=expected.why.format(**fill),
        config=tuple(flag.format(**fill) for flag in expected.config),
        bench_flags=tuple(flag.format(**fill) for flag in expected.bench_flags))
  return result


def notes(machine: Machine, expected: dict[str, Expected]) -> list[str]:
  """The plan's notes: how its seconds were guessed."""
  lines = machine.notes.format(setup=machine.setup).splitlines()
  lines += [f"- {name}: {row_expected.why}" for name, row_expected in expected.items()
            if row_expected.why]
  return [wrapped for line in lines for wrapped in (
      textwrap.wrap(line, width=80, subsequent_indent="  ") if line.startswith("- ") else [line])]


def row(start: int, end: int, stage: str, text: str) -> str:
  return f"  {start:>5} {end:>5}  {stage:<12} {text}"


class Planner:
  """Walks the stages left through calls of given budgets, on the expected seconds.

  `_best` and `_timed` plan one stage from second `t` of a call whose work
  ends at `end`: its row, the second it ends, and "done", "skipped" (in this
  call) or "cut" (at the deadline; the next call goes on).
  """

  def __init__(self, expected: dict[str, Expected], stages: dict[str, Stage], setup: int,
               best_limits: tuple[int, int], pending: list[str], trained: set[str]):
    self.expected, self.stages, self.setup = expected, stages, setup
    self.best_min, self.best_max = best_limits
    self.pending, self.trained = pending, trained
    self.training_left = {name: expected[name].train for name in pending}
    self.resumed: set[str] = set()

  def call(self, number: int, budget: int) -> list[str]:
    """The rows of one call, from its set-up to its summary."""
    end = budget - END_MARGIN
    lines = [f"call {number}: ends within {budget} s; seconds from its start (expected):",
             row(0, self.setup, "set-up", "carried wheels, versions, device")]
    t = self.setup
    for name in list(self.pending):
      need = self.stages[name].needs
      if need and need not in self.trained:
        lines.append(row(t, t, name, f"waits for {need}'s training" if need in self.pending
                         else f"skipped: {need} is not trained"))
        continue
      if end - t < LEAST_STAGE_SECONDS:
        break
      line, stop, outcome = (self._best if self.stages[name].kind == "best" else self._timed)(
          name, t, end)
      lines.append(line)
      if outcome == "skipped":
        continue
      t = stop
      if outcome == "cut":
        break
      self.pending.remove(name)
      self.trained.add(name)
    lines.append(row(end, budget, "summary", "summary.md and the files to fetch"))
    return lines

  def _best(self, name: str, t: int, end: int) -> tuple[str, int, str]:
    """best trains for the time left before its evaluations and its export."""
    expected = self.expected[name]
    export = sum(self.expected[other].start for other, stage in self.stages.items()
                 if stage.needs == name)
    seconds = min(end - t - expected.before_training - expected.after - export, self.best_max)
    if seconds < self.best_min:
      return (row(t, t, name, f"skipped in this call: {max(seconds, 0)} s of training would be "
                  f"left, under its {self.best_min} s"), t, "skipped")
    stop = t + expected.before_training + seconds + expected.after
    return row(t, stop, name, f"{expected.what}: ~{seconds} s of training"), stop, "done"

  def _timed(self, name: str, t: int, end: int) -> tuple[str, int, str]:
    """A stage of fixed seconds: done within the call, or cut (a training resumed) at its end."""
    expected = self.expected[name]
    stop = t + expected.before_training + self.training_left[name] + expected.after
    if stop <= end:
      resumed = (", resumed (~%d s of training)" % self.training_left[name]
                 if name in self.resumed else "")
      return row(t, stop, name, expected.what + resumed), stop, "done"
    if self.stages[name].kind == "train" and end - t > expected.start:
      trained_now = end - t - expected.start
      self.training_left[name] -= trained_now
      self.resumed.add(name)
      return (row(t, end, name, f"{expected.what}: trains ~{trained_now} s of ~{expected.train}, "
                  "then SIGTERM (checkpoint saved); the next call resumes it"), end, "cut")
    cut = f"{expected.what}: cut at the deadline; the next call makes it again"
    return row(t, end, name, cut), end, "cut"


def runs_state(runs: pathlib.Path, names: list[str]) -> tuple[set[str], set[str], set[str]]:
  """The stages done and failed, and the runs trained, in a runs folder."""
  done = {name for name in names if (runs / f"{name}.done").exists()}
  failed = {name for name in names if (runs / f"{name}.failed").exists()}
  trained = {name for name in TRAINED_RUNS if (runs / name / "trained").exists()}
  return done, failed, trained


def plan(machine: Machine, stages: list[Stage], expected: dict[str, Expected], order: list[str],
         named: list[str], runs: pathlib.Path, budgets: list[int], first_call: int) -> list[str]:
  """The printed plan of `budgets` calls over the stages of `order` not yet done in `runs`."""
  done, failed, trained = runs_state(runs, [stage.name for stage in stages])
  lines = [f"The plan of {len(budgets)} call{'s' if len(budgets) > 1 else ''} on {runs}, "
           f"in this order: {' '.join(order)}"]
  pending = []
  for name in order:
    if name in done:
      lines.append(f"  {name}: done before, skipped")
    elif name in failed and name not in named:
      lines.append(f"  {name}: failed before, not tried again (name it to retry)")
    else:
      pending.append(name)
  planner = Planner(expected, {stage.name: stage for stage in stages}, machine.setup,
                    machine.best_seconds, pending, trained)
  for number, budget in enumerate(budgets, first_call):
    lines += planner.call(number, budget)
  lines.append("not reached in these calls: " + " ".join(planner.pending) if planner.pending
               else "every stage is expected to be done in these calls")
  return lines + [""] + notes(machine, expected)
