"""One training step of the tiny config with the partial-products head, on this process's devices.

  XLA_FLAGS=--xla_force_host_platform_device_count=N python tests/partial_products_step.py OUT.npz

The test runs it as a subprocess with two devices (XLA_FLAGS is read when
jax is imported) and calls `run` itself on one, so the two steps compare.
"""

import sys

import jax
import numpy as np

from polyflax import config_files, generate
from polyflax import experiment as experiment_lib


def run() -> dict:
  """The step's metric sums (and the device count) on a batch of 16 generated rows."""
  config = config_files.set_fields(config_files.load(config_files.TINY_CONFIG),
                                   {"partial_products_weight": 0.1})
  experiment, state = experiment_lib.build(config, total_steps=100)
  pairs = [line.split("=") for line in generate.generate_lines(16, seed=5)]
  local_batch = {"inputs": experiment.vocab.encode_batch([p[0] for p in pairs], 32),
                 "targets": experiment.vocab.encode_batch([p[1] for p in pairs], 32),
                 "example_mask": np.ones(16, np.float32)}
  batch = experiment.train_batch(local_batch)
  # The targets are split over the devices like the inputs.
  for name in ("partial_products", "partial_products_mask"):
    assert batch[name].sharding == batch["inputs"].sharding, name
  _, sums = experiment.train_step(state, batch)
  return dict({name: np.asarray(value) for name, value in jax.device_get(sums).items()},
              devices=np.asarray(jax.device_count()))


if __name__ == "__main__":
  np.savez(sys.argv[1], **run())
