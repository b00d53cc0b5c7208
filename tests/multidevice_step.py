"""One training step of the tiny config on N host devices (run as a subprocess).

  python tests/multidevice_step.py N OUT.npz

XLA_FLAGS must be set before jax is imported, hence a separate process.
"""

import os
import sys

num_devices, out_path = int(sys.argv[1]), sys.argv[2]
# After the flags the tests set for every process (conftest.py), so both runs compile alike.
os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                           f"--xla_force_host_platform_device_count={num_devices}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from polyflax import config_files, experiment as experiment_lib, sharding  # pylint: disable=g-import-not-at-top,wrong-import-position

assert jax.device_count() == num_devices, jax.devices()
config = config_files.load(config_files.TINY_CONFIG)
experiment, initial_state = experiment_lib.build(config, total_steps=100)
rng = np.random.default_rng(0)
batch_size, length = 16, 12
lengths = rng.integers(4, length + 1, size=(2, batch_size))
positions = np.arange(length)[None, :]
batch = {
    "inputs": np.where(positions < lengths[0][:, None], rng.integers(4, 36, (batch_size, length)), 0),
    "targets": np.where(positions < lengths[1][:, None], rng.integers(4, 36, (batch_size, length)), 0),
    "example_mask": np.ones(batch_size, np.float32),
}
batch = {name: value.astype(np.int32 if name != "example_mask" else np.float32)
         for name, value in batch.items()}
state, sums = experiment.train_step(initial_state, sharding.put_batch(batch, experiment.mesh))
state, sums = experiment.train_step(state, sharding.put_batch(batch, experiment.mesh))
leaves = [np.asarray(x) for x in jax.tree.leaves(state.params)]
np.savez(out_path, loss=np.asarray(sums["loss_sum"]), token_count=np.asarray(sums["token_count"]),
         grad_norm=np.asarray(sums["grad_norm"]), **{f"param_{i}": x for i, x in enumerate(leaves)})
