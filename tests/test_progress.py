"""The training loop's progress: the time estimate, and how many steps run ahead."""

from polyflax import progress


def test_time_estimate_says_once_how_long_the_rest_of_a_cpu_run_takes():
  now = [0.0]
  clock = lambda: now[0]
  estimate = progress.TimeEstimate(5000, backend="cpu", skip_steps=5, measure_steps=10,
                                   clock=clock)
  said = []
  for step in range(1, 40):
    # The first steps of a session are slow (compilation, warming up): not timed.
    now[0] += 2.0 if step > 6 else 30.0
    said.append(estimate.observe(step))
  lines = [line for line in said if line]
  # Steps 1-5 skipped, the clock starts at step 6 and reads 10 steps later; then never again.
  assert len(lines) == 1 and said.index(lines[0]) == 15
  assert lines[0].startswith("note: no GPU or TPU: the remaining 4,984 steps take about 2.8 h "
                             "at the speed of steps 7-16 (2.00 s a step")
  assert "configs/cpu.py" in lines[0]
  for backend, total_steps in (("gpu", 5000), ("cpu", 1000)):  # an accelerator; under an hour
    quiet = progress.TimeEstimate(total_steps, backend=backend, skip_steps=5,
                                  measure_steps=10, clock=clock)
    assert not any(quiet.observe(step) for step in range(1, 40))


def test_a_step_is_handed_over_only_once_the_step_two_before_it_is_done():
  events = []

  class Step:  # the metric sums of a step, recording when they are waited for
    def __init__(self, number):
      self.number = number

    def block_until_ready(self):
      events.append(("done", self.number))
      return self

  class Bar:
    n = 0

    def update(self, count):
      self.n += count

  bar = Bar()
  in_flight = progress.InFlight(bar, first_step=10)
  for number in range(11, 16):
    in_flight.make_room()
    events.append(("hand over", number))
    in_flight.add(Step(number))
    assert in_flight.finished == 10 + bar.n == max(10, number - 2)
  assert events == [("hand over", 11), ("hand over", 12), ("done", 11), ("hand over", 13),
                    ("done", 12), ("hand over", 14), ("done", 13), ("hand over", 15)]
  in_flight.wait()
  assert in_flight.finished == 15 and bar.n == 5
