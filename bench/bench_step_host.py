"""Host work around each training step that does not depend on the device: milliseconds a step.

  python bench/bench_step_host.py --config configs/default.py [--repeats 200] [--json OUT]
      [--config.FIELD=VALUE ...]

A jitted step flattens its arguments into arrays before it runs and builds
its outputs' pytrees after, on the host, in the Python thread that hands the
next step over. Here, on whatever device jax sees, timed apart and without
running the step (medians of --repeats):
  * flattening the config's train state and building it again from its
    arrays (once each per step: the state goes in and comes out), as the
    state is held today, its parameters and optimizer moments in nnx
    Variables;
  * the same arrays as one flat dict: what a step would pay for a state of
    plain arrays;
  * placing one batch of the longest bucket on the devices (`put_batch`).
A device that finishes a step faster than the host hands the next one over
waits on these.
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np

from polyflax import config_files, sharding, steps
from polyflax import experiment as experiment_lib


def median_ms(work, repeats: int) -> float:
  """Median milliseconds of `work()` over `repeats` calls, after one untimed call."""
  work()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    work()
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/default.py")
  parser.add_argument("--repeats", type=int, default=200, help="timed calls of each")
  parser.add_argument("--json", default=None, help="also write the figures here")
  args, overrides = parser.parse_known_args()
  config = config_files.load(args.config, overrides)

  mesh = sharding.make_mesh()
  experiment, state = experiment_lib.build(config, total_steps=10_000, mesh=mesh)
  leaves, treedef = jax.tree.flatten(state)
  plain = {str(index): leaf for index, leaf in enumerate(leaves)}
  plain_leaves, plain_treedef = jax.tree.flatten(plain)
  rows = config.batch_size
  batch = {name: np.ones((rows,), np.float32) if name == "example_mask"
           else np.ones((rows, config.max_len), np.int32) for name in steps.STEP_INPUTS}

  figures = {
      "config": " ".join([args.config, *overrides]),
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "parameters": experiment.num_params,
      "state_arrays": len(leaves),
      "state_flatten_ms": median_ms(lambda: jax.tree.flatten(state), args.repeats),
      "state_unflatten_ms": median_ms(lambda: jax.tree.unflatten(treedef, leaves), args.repeats),
      "plain_flatten_ms": median_ms(lambda: jax.tree.flatten(plain), args.repeats),
      "plain_unflatten_ms": median_ms(lambda: jax.tree.unflatten(plain_treedef, plain_leaves),
                                      args.repeats),
      "put_batch_ms": median_ms(lambda: sharding.put_batch(batch, mesh), args.repeats),
      "batch": [rows, config.max_len],
  }
  print(f"config: {figures['config']}; {figures['parameters']:,} parameters; "
        f"devices: {figures['devices']}")
  print(f"train state: {len(leaves)} arrays")
  print(f"  as held (nnx Variables): flatten {figures['state_flatten_ms']:.3f} ms, "
        f"build again {figures['state_unflatten_ms']:.3f} ms")
  print(f"  as one flat dict:        flatten {figures['plain_flatten_ms']:.3f} ms, "
        f"build again {figures['plain_unflatten_ms']:.3f} ms")
  print(f"put_batch of {rows} x {config.max_len}: {figures['put_batch_ms']:.3f} ms")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(figures, f, indent=2)


if __name__ == "__main__":
  main()
