"""Joining JAX's distributed runtime, so one training spans several hosts.

Every host runs the same command; `initialize` connects the processes through
process 0's coordinator before any other JAX call, after which
`jax.devices()` lists every device of every process and the one `data` mesh
of `sharding.make_mesh` spans them all. Nothing else changes: each process
feeds its own slice of every global batch, and the global batch, its order
and the results are those of one process with as many devices.

The settings are `config.distributed`:

  enabled:              'auto' (default): join when `coordinator_address` or
                        `num_processes` > 1 is set, when JAX_COORDINATOR_ADDRESS
                        is in the environment, or when SLURM (`srun`) or
                        Open MPI (`mpirun`) started more than one process;
                        'true': always join (JAX detects whatever is unset,
                        e.g. on Cloud TPU pods); 'false': never (one process).
  coordinator_address:  host:port of process 0's coordinator; '' detects it.
  num_processes:        number of processes; 0 detects it.
  process_id:           this process's number in [0, num_processes); -1
                        detects it.

On the CPU, collectives between processes go through gloo
(`jax_cpu_collectives_implementation`, gloo by default in this JAX version).
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import jax
import ml_collections
from absl import logging

from polyflax import config_checks

T = TypeVar("T")

_ENABLED_VALUES = ("auto", "true", "false")


def _enabled(settings: ml_collections.ConfigDict) -> str:
  value = settings.get("enabled", "auto")
  if isinstance(value, bool):
    return "true" if value else "false"
  value = str(value).strip().lower()
  if value not in _ENABLED_VALUES:
    raise config_checks.ConfigError(
        f"distributed.enabled must be 'auto', 'true' or 'false' (got {settings.enabled!r})")
  return value


def _env_int(name: str) -> int:
  try:
    return int(os.environ.get(name, "0"))
  except ValueError:
    return 0


def launcher_processes() -> int:
  """Processes a SLURM step or an Open MPI launch started (0: neither is present).

  For SLURM this is SLURM_STEP_NUM_TASKS, which `srun` sets for the tasks it
  starts, and only where the variables JAX's own SLURM detection reads are
  all present (SLURM_NTASKS alone is also seen by a batch script).
  """
  slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID")
  if all(name in os.environ for name in slurm_vars) and "SLURM_STEP_NUM_TASKS" in os.environ:
    return _env_int("SLURM_STEP_NUM_TASKS")
  if "OMPI_MCA_orte_hnp_uri" in os.environ:
    return _env_int("OMPI_COMM_WORLD_SIZE")
  return 0


def _arguments(settings: ml_collections.ConfigDict) -> dict:
  """Keyword arguments of `jax.distributed.initialize`: None where JAX should detect."""
  address = str(settings.get("coordinator_address", "") or "").strip() or None
  num_processes = int(settings.get("num_processes", 0))
  process_id = int(settings.get("process_id", -1))
  problems = []
  if num_processes < 0:
    problems.append(f"distributed.num_processes must be 0 (detect) or positive "
                    f"(got {num_processes})")
  if process_id < -1:
    problems.append(f"distributed.process_id must be -1 (detect) or at least 0 (got {process_id})")
  elif num_processes > 0 and process_id >= num_processes:
    problems.append(f"distributed.process_id={process_id} must be below "
                    f"distributed.num_processes={num_processes}")
  if address is not None and ":" not in address:
    problems.append(f"distributed.coordinator_address must be host:port (got {address!r})")
  if problems:
    raise config_checks.ConfigError("invalid config:\n  " + "\n  ".join(problems))
  return dict(coordinator_address=address,
              num_processes=num_processes if num_processes > 0 else None,
              process_id=process_id if process_id >= 0 else None)


def requested(settings: ml_collections.ConfigDict | None) -> bool:
  """Whether `settings` (`config.distributed`) and the environment ask to join."""
  settings = settings if settings is not None else ml_collections.ConfigDict()
  enabled = _enabled(settings)
  arguments = _arguments(settings)
  if enabled != "auto":
    return enabled == "true"
  return (arguments["coordinator_address"] is not None
          or (arguments["num_processes"] or 0) > 1
          or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
          or launcher_processes() > 1)


def initialize(config: ml_collections.ConfigDict) -> bool:
  """Joins the distributed runtime if `config.distributed` asks for it.

  Call once per process, before any other JAX call; later calls, and calls
  when the runtime is already up, do nothing.

  Returns:
    Whether this process is (now) part of a multi-process runtime.

  Raises:
    config_checks.ConfigError: on invalid settings.
  """
  settings = config.get("distributed") if hasattr(config, "get") else None
  if jax.distributed.is_initialized():
    return True
  if not requested(settings):
    return False
  arguments = _arguments(settings)
  logging.info("jax.distributed.initialize(%s)", arguments)
  jax.distributed.initialize(**arguments)
  if jax.process_index() == 0:
    print(f"distributed: {jax.process_count()} processes, {jax.device_count()} devices "
          f"({jax.local_device_count()} on process 0)", flush=True)
  return True


def process_zero_first(make: Callable[[], T], what: str) -> T:
  """Runs `make` on process 0, then on the others once process 0 is done.

  For work that writes shared files (the data splits): process 0 makes them
  first; the others then find its files on a shared filesystem, or make the
  same ones (the work is seeded) on their own disks. With one process this
  is just `make()`.
  """
  if jax.process_count() == 1:
    return make()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  result = make() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f"polyflax: {what}")
  return result if jax.process_index() == 0 else make()
