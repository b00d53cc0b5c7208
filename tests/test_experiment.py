"""experiment.py: the learning-rate schedule, and one compiled train step for runs of any length."""

import jax
import numpy as np
import optax
from jax import monitoring

from polyflax import config_files, experiment

CACHE_HIT = "/jax/compilation_cache/cache_hits"


def test_the_schedule_is_optaxs_warmup_then_cosine_whether_its_length_is_known_or_traced():
  config = config_files.tiny("unused", warmup_steps=3, lr_final_fraction=0.1)
  total_steps, peak = 20, config.learning_rate
  reference = optax.join_schedules(
      [optax.linear_schedule(0.0, peak, 3),
       optax.cosine_decay_schedule(peak, total_steps - 3, alpha=0.1)], [3])
  counts = np.arange(total_steps + 5, dtype=np.int32)
  expected = np.array([reference(count) for count in counts])
  on_the_host = np.array([experiment.learning_rate_schedule(config, total_steps)(count)
                          for count in counts])
  traced = jax.jit(jax.vmap(lambda count, steps: experiment.learning_rate_schedule(
      config, steps)(count), in_axes=(0, None)))(counts, np.int32(total_steps))
  np.testing.assert_array_equal(on_the_host, expected)
  # Compiled, the same arithmetic up to float32 rounding (XLA may fuse it).
  np.testing.assert_allclose(np.asarray(traced), expected, rtol=1e-6)
  assert expected[-1] == np.float32(0.1 * peak) and expected[3] == np.float32(peak)


def test_runs_of_other_lengths_share_one_compiled_train_step():
  # conftest.py turns the persistent compilation cache on: a second run whose
  # step compiled to the same program finds it there.
  config = config_files.tiny("unused")
  events = []
  listener = lambda name, **kwargs: events.append(name)
  monitoring.register_event_listener(listener)
  try:
    hits = {}
    for total_steps in (30, 77):
      built, state = experiment.build(config, total_steps=total_steps)
      events.clear()
      experiment.compile_train_step(built, state, [(config.batch_size, 32)])
      hits[total_steps] = events.count(CACHE_HIT)
  finally:
    monitoring.unregister_event_listener(listener)
  assert hits[77] == 1, hits
