"""experiment.py: the learning-rate schedule, and one compiled train step for runs of any length."""

import jax
import numpy as np
import optax
from jax import monitoring

from polyflax import config_files, experiment

# Events of JAX's compilation: a program asked for (and then looked up in
# the persistent cache), found there, or not found there and compiled.
COMPILE_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"
CACHE_HIT = "/jax/compilation_cache/cache_hits"
CACHE_MISS = "/jax/compilation_cache/cache_misses"


def test_the_schedule_is_optaxs_warmup_then_cosine_whether_its_length_is_known_or_traced():
  config = experiment.OptimizerSettings.of(
      config_files.tiny("unused", warmup_steps=3, lr_final_fraction=0.1))
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
  config = config_files.tiny("unused")
  events = []
  listener = lambda name, **kwargs: events.append(name)

  def compile_events(total_steps):
    built, state = experiment.build(config, total_steps=total_steps)
    events.clear()
    experiment.compile_train_step(built, state, [(config.batch_size, 32)])
    return {name: events.count(name) for name in (COMPILE_REQUEST, CACHE_HIT, CACHE_MISS)}

  monitoring.register_event_listener(listener)
  try:
    compile_events(30)
    # In the same process JAX keeps the program: a run of another length compiles nothing.
    in_process = compile_events(77)
    # In another process (here: JAX's caches cleared) the persistent compilation
    # cache, which conftest.py turns on, serves every program the step needs.
    jax.clear_caches()
    from_disk = compile_events(51)
  finally:
    monitoring.unregister_event_listener(listener)
  assert in_process[COMPILE_REQUEST] == 0, in_process
  assert from_disk[CACHE_HIT] >= 1 and from_disk[CACHE_MISS] == 0, from_disk
