"""One data-parallel mesh over every device: batch sharded, state replicated.

The mesh has a single axis, `data`, with Auto axis types (jax.make_mesh now
defaults to Explicit axes, under which embedding gathers fail to shard).
Batches are assembled from each process's local rows with
`jax.make_array_from_process_local_data`, so the same code serves one device,
several devices and several processes. `compile_shapes` runs a step or the
decoder once per batch shape, before the timed work.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from polyflax import bucketing

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named `data` over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,),
              axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of values every device holds whole (parameters, optimizer state)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of arrays split along their first (batch) axis over `data`."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch_multiple(mesh: Mesh) -> int:
  """Global batch sizes must be a multiple of this (the device count)."""
  return mesh.devices.size


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Builds global, batch-sharded arrays from this process's rows of a batch."""
  sharding = batch_sharded(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def compile_shapes(run: Callable[[dict[str, np.ndarray]], Any],
                   shapes: Sequence[tuple[int, int]]) -> int:
  """Calls `run` once on a padding batch of each (local batch size, length); returns how many.

  Compiles every shape a pass will use before it starts, so that the pass
  is timed without compilation. `run` takes this process's rows of a batch
  (`bucketing.padding_batch`: masked rows, so no example is touched)
  and returns device values, which are waited for.
  """
  shapes = list(shapes)
  for local_size, length in shapes:
    jax.block_until_ready(run(bucketing.padding_batch(local_size, length)))
  return len(shapes)
