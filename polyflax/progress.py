"""How a training run keeps pace with its steps: at most two in flight, and how long the rest takes.

jax runs a step asynchronously: handing it over returns at once, and a loop
that never waits queues steps without bound. `InFlight` keeps at most two
steps handed over and not known to be finished: before the loop hands over
step N it waits for step N-2, on that step's metric sums (a few scalars,
never the donated state). The device always has the next step queued, the
host never runs further ahead, and a stop waits for two steps at most. The
progress bar counts finished steps, so its rate and ETA are the steps' own.

`TrainingClock` counts a run's training seconds across sessions, with
validation left out: the time axis of the validation history.

`TimeEstimate` times the first steps of a run on a CPU and, when the rest of
the run would take over an hour, says so once, pointing to configs/cpu.py.

`RunProgress` is where a run stands, in one object: its step, the counters
every checkpoint's run record keeps (`from_record`, `record_fields`: skipped
steps, training examples, the validation history) and the clocks above, with
the log window's, moved together by the loop's events. `batch_examples` is
what a step adds to the training examples.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import time
from typing import Any, Callable

import jax

from polyflax import run_log
from polyflax import run_record

# Steps handed to jax and not yet known to be finished, at most.
MAX_STEPS_IN_FLIGHT = 2


class InFlight:
  """The steps handed to jax and not yet known to be finished.

  `progress` (a tqdm bar, or anything with `update(n)`) counts the finished
  ones; `finished` is the last finished step.
  """

  def __init__(self, progress, first_step: int, limit: int = MAX_STEPS_IN_FLIGHT):
    self._progress, self._limit = progress, limit
    self._sums = collections.deque()
    self.finished = first_step

  def make_room(self) -> None:
    """Waits until one more step may be handed over (for step N: until N-2 is done)."""
    self.wait(at_most=self._limit - 1)

  def add(self, sums: Any) -> None:
    """Records a step just handed over, by its metric sums (device values)."""
    self._sums.append(sums)

  def wait(self, at_most: int = 0) -> None:
    """Waits for the oldest steps until at most `at_most` are unfinished."""
    while len(self._sums) > at_most:
      jax.block_until_ready(self._sums.popleft())
      self.finished += 1
      self._progress.update(1)


class TimeEstimate:
  """Once, early in a run on a CPU: how long the rest takes at the speed of its early steps.

  The first `skip_steps` finished steps are not timed: the first waits for
  compilation, and on a CPU the first tens of steps of a session run slower
  than the rest, so timing them would overstate the estimate. The clock
  starts when step `skip_steps` of the session is finished and reads again
  `measure_steps` finished steps later; the rest of the run at that speed,
  validation apart, is said only when it is over `min_hours`. `clock` is
  for tests.
  """

  def __init__(self, total_steps: int, *, backend: str, skip_steps: int = 100,
               measure_steps: int = 100, min_hours: float = 1.0,
               clock: Callable[[], float] = time.perf_counter):
    self._total_steps, self._measure_steps = total_steps, measure_steps
    self._skip_steps = skip_steps
    self._min_hours, self._clock = min_hours, clock
    self._done = backend != "cpu"
    self._first_step = None  # the first finished step this session saw
    self._start = None  # (finished step, time)

  def observe(self, finished_step: int) -> str | None:
    """Called as steps finish; returns the one line, once, when there is one to say."""
    if self._done:
      return None
    now = self._clock()
    if self._first_step is None:
      self._first_step = finished_step
    if self._start is None:
      if finished_step - self._first_step >= self._skip_steps:
        self._start = (finished_step, now)
      return None
    start_step, start_time = self._start
    measured = finished_step - start_step
    if measured < self._measure_steps:
      return None
    self._done = True
    seconds_per_step = (now - start_time) / measured
    remaining = self._total_steps - finished_step
    hours = remaining * seconds_per_step / 3600
    if hours <= self._min_hours:
      return None
    return (f"note: no GPU or TPU: the remaining {remaining:,} steps take about {hours:.1f} h "
            f"at the speed of steps {start_step + 1}-{finished_step} "
            f"({seconds_per_step:.2f} s a step, "
            "validation apart); configs/cpu.py is the recipe sized for a CPU "
            "(its model and training time: docs/results.md)")


def batch_examples(local_batch: dict, process_count: int) -> int:
  """The training examples of a step: the real rows of its global batch, padding rows left out.

  `local_batch` is this process's slice (its `example_mask` is 1 on real
  rows). The rows of a batch vary from step to step with
  `constant_per_batch="tokens"`; each step counts its own. Every slice of a
  training batch holds as many real rows, since the training streams drop
  each bucket's partial batch (`training_streams`), so the slice's count
  times `process_count` is the global batch's, with no exchange between
  processes. (A padded batch, which training never serves, is counted
  exactly on one process only.)
  """
  return int(local_batch["example_mask"].sum()) * process_count


class TrainingClock:
  """Seconds of training of a run, over all its sessions, paused while it validates.

  A session starts it at `seconds_before` (what the checkpoint it resumed
  from recorded, 0 for a fresh run), `start`s it when its loop begins and
  `pause`s it around validation and the save that follows it. Time spent
  before the loop (data, model, the compilation that `train.py` times apart
  as train/compile_seconds) is not counted, so the first step counts only
  what it waits for beyond that (little, its programs being compiled). The
  steps a session trains again after a resume from an older checkpoint are
  counted once: the clock goes on from the checkpoint's seconds. `clock` is
  for tests.
  """

  def __init__(self, seconds_before: float = 0.0, *,
               clock: Callable[[], float] = time.perf_counter):
    self._seconds_before, self._clock = float(seconds_before), clock
    self._started_at = None  # when it last started; None while paused

  def start(self) -> None:
    """Counts from now on (nothing if it is counting already)."""
    if self._started_at is None:
      self._started_at = self._clock()

  def pause(self) -> float:
    """Stops counting until the next `start`; returns the seconds so far."""
    self._seconds_before = self.seconds()
    self._started_at = None
    return self._seconds_before

  def seconds(self) -> float:
    """The training seconds so far, this session's and the earlier ones'."""
    running = 0.0 if self._started_at is None else self._clock() - self._started_at
    return self._seconds_before + running


# Marks a `RunProgress` field kept in the run record under the same name and
# resumed from it.
_RESUMED = {"resumed": True}


@dataclasses.dataclass
class RunProgress:
  """Where a training run stands: its step, its counters and this session's clocks.

  The counters are the run record's fields of the same names: those marked
  `_RESUMED` are saved by `record_fields` and read back by `from_record`, so
  a counter added here and to `run_record.RunRecord` is saved and resumed
  with no other change. `train_seconds` is read from `clock`; `validation`,
  the figures of the step when it validated, is saved and not resumed.

  The clocks (`clock`, `in_flight`, `estimate`, and the window's examples/s
  count) move together at the loop's events: `before_step` (room for one
  more step; the time estimate reads), `after_step` (after the session's
  first step, which waited for compilation, they all start from it),
  `pause` (validation and saves are not training time) and `resume`.
  """
  step: int  # steps handed over to jax
  first_step: int  # the step this session started from
  clock: TrainingClock
  in_flight: InFlight
  estimate: TimeEstimate
  window: run_log.LogWindow
  # Steps skipped for a non-finite loss, over every session.
  skipped_steps: int = dataclasses.field(default=0, metadata=_RESUMED)
  # Training examples of every step so far, over every session: the real rows
  # of each global batch, never padding. A step skipped for a non-finite loss
  # counts: its batch was drawn and computed (the stream moved past it), though
  # not learned from; `skipped_steps` says how many such steps there were.
  # None (unknown, and staying so) in a run resumed from a record without it.
  train_examples: int | None = dataclasses.field(default=0, metadata=_RESUMED)
  # Every validation so far, oldest first (`run_record.history_entry`).
  validation_history: list = dataclasses.field(default_factory=list, metadata=_RESUMED)
  # The figures of this session's last validation ({}: none yet), and its step.
  validation: dict = dataclasses.field(default_factory=dict)
  validation_step: int | None = None

  @classmethod
  def from_record(cls, record: run_record.RunRecord | None, *, step: int, total_steps: int,
                  bar, backend: str, track_finite: bool) -> "RunProgress":
    """A session starting at `step`, going on from `record`'s counters (None: a fresh run).

    `bar` (tqdm) counts finished steps; `backend` decides whether the time
    estimate speaks; `track_finite` whether the window checks each loss.
    """
    resumed = {} if record is None else {
        field.name: copy.deepcopy(getattr(record, field.name))
        for field in dataclasses.fields(cls) if field.metadata.get("resumed")}
    progress = cls(step=step, first_step=step,
                   clock=TrainingClock(0.0 if record is None else record.train_seconds),
                   in_flight=InFlight(bar, first_step=step),
                   estimate=TimeEstimate(total_steps, backend=backend),
                   window=run_log.LogWindow(track_finite=track_finite), **resumed)
    progress.clock.start()
    return progress

  def record_fields(self) -> dict:
    """The run record's fields this holds, at the current step (see `RunRecord`)."""
    fields = {field.name: copy.deepcopy(getattr(self, field.name))
              for field in dataclasses.fields(self) if field.metadata.get("resumed")}
    fields["train_seconds"] = self.clock.seconds()
    fields["validation"] = (dict(self.validation) if self.validation_step == self.step
                            else None)
    return fields

  def before_step(self) -> str | None:
    """Waits until the next step may be handed over; the time estimate's line, once."""
    self.in_flight.make_room()  # for step N: step N-2 is done
    if self.step > self.first_step + 1:
      return self.estimate.observe(self.in_flight.finished)
    return None

  def after_step(self, sums: dict, examples: int) -> None:
    """Counts the step just handed over: its metric sums and global example count.

    `examples` is the real rows of the step's global batch (`batch_examples`).
    """
    self.step += 1
    if self.train_examples is not None:
      self.train_examples += int(examples)
    self.in_flight.add(sums)
    self.window.add(sums, examples)
    if self.step == self.first_step + 1:
      # The clocks start after the first step, which waited for compilation.
      self.in_flight.wait()
      self.estimate.observe(self.in_flight.finished)
      self.window.restart_clock()

  def window_metrics(self) -> dict:
    """The log window's training metrics, with the skipped steps so far; starts the next window."""
    metrics = self.window.metrics()
    self.in_flight.wait()  # done already: the window's metrics waited for its steps
    self.skipped_steps += metrics.pop("steps_skipped_in_window")
    metrics["skipped_steps"] = self.skipped_steps
    self.window.restart()
    return metrics

  def pause(self) -> float:
    """Stops the training clock (to validate, or save and stop); returns the seconds so far."""
    return self.clock.pause()

  def validated(self, metrics: dict) -> dict:
    """Keeps the current step's validation figures and their history entry; returns the entry."""
    self.validation, self.validation_step = dict(metrics), self.step
    entry = run_record.history_entry(self.step, self.clock.seconds(), metrics,
                                     examples=self.train_examples)
    self.validation_history.append(entry)
    return entry

  def resume(self) -> None:
    """Training goes on after a validation: its clock and the window's count restart."""
    self.window.restart_clock()
    self.clock.start()
