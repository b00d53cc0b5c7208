"""Runs polyflax in several processes on this machine, as on several hosts.

`launch` starts `num_processes` copies of this script, each with
`devices_per_process` CPU devices, joined through JAX's distributed runtime
(a coordinator on a free localhost port; collectives through gloo). Each copy
joins with `distributed.initialize` (as `cli.run` does), then runs the same
list of phases, e.g.

  [{"mode": "train", "stop_at_step": 7}, {"mode": "train"}, {"mode": "evaluate"}]

on configs/tiny.py plus the spec's overrides: `train.train_and_evaluate` for
"train" (stopping after saving a checkpoint at `stop_at_step`, if given),
`cli.run(mode, ...)` for the other modes. It writes `process_<i>.json`
(process and device counts; per phase, for "train" the validation figures
it returned and the latest checkpoint step this process then finds, for the
other modes the exit status) into the spec's `out_dir`. A
worker is run as

  python tests/multihost_run.py SPEC.json PROCESS_ID NUM_PROCESSES DEVICES PORT

XLA_FLAGS must be set before jax is imported, hence separate processes.
"""

import json
import os
import socket
import subprocess
import sys
import time
import forked_python  # tests/: subprocesses forked from one that has imported jax
from xla_flags import TEST_OPTIMISATION

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port of localhost that nothing listens on (at the time of asking)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _tail(path: str, chars: int = 4000) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read()
  return text[-chars:]


def launch(spec: dict, *, num_processes: int, devices_per_process: int,
           timeout: float = 420.0) -> list[str]:
  """Runs the spec in `num_processes` processes; returns each one's output.

  Output (stdout and stderr together) goes to `out_dir/process_<i>.log`. If a
  process fails or the time runs out, the others are killed and RuntimeError
  shows every process's status and the end of its output.
  """
  out_dir = spec["out_dir"]
  os.makedirs(out_dir, exist_ok=True)
  spec_path = os.path.join(out_dir, "spec.json")
  with open(spec_path, "w", encoding="utf-8") as f:
    json.dump(spec, f)
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  # Only the arguments below say how the processes find each other.
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  port = free_port() if num_processes > 1 else 0
  processes, logs = [], []
  try:
    for process_id in range(num_processes):
      log_path = os.path.join(out_dir, f"process_{process_id}.log")
      logs.append(log_path)
      with open(log_path, "w", encoding="utf-8") as log:
        processes.append(forked_python.Popen(
            [sys.executable, os.path.abspath(__file__), spec_path, str(process_id),
             str(num_processes), str(devices_per_process), str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    reason = None
    while True:
      codes = [p.poll() for p in processes]
      if any(code not in (None, 0) for code in codes):
        reason = "a process failed; the others were killed"
        break
      if all(code == 0 for code in codes):
        break
      if time.monotonic() > deadline:
        reason = f"timed out after {timeout:.0f} s; every process still running was killed"
        break
      time.sleep(0.2)
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
    for p in processes:
      p.wait()
  if reason is not None:
    report = [f"--- process {process_id}: exit status {p.returncode} ---\n" + _tail(log_path)
              for process_id, (p, log_path) in enumerate(zip(processes, logs))]
    raise RuntimeError(f"multi-process run failed ({reason}):\n" + "\n".join(report))
  outputs = []
  for log_path in logs:
    with open(log_path, encoding="utf-8", errors="replace") as f:
      outputs.append(f.read())
  return outputs


def _worker(argv: list[str]) -> int:
  spec_path, process_id, num_processes, devices, port = argv
  process_id, num_processes, devices = int(process_id), int(num_processes), int(devices)
  # The flags conftest.py gives every test process (tests/xla_flags.py), and the device count.
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {TEST_OPTIMISATION}"
  with open(spec_path, encoding="utf-8") as f:
    spec = json.load(f)

  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from polyflax import checkpoints, cli, config_files, distributed, train

  def make_config(phase_overrides):
    config = config_files.load(config_files.TINY_CONFIG)
    config_files.set_fields(config, spec.get("overrides", {}))
    config_files.set_fields(config, phase_overrides)
    if num_processes > 1:
      config.distributed.enabled = "true"
      config.distributed.coordinator_address = f"127.0.0.1:{port}"
      config.distributed.num_processes = num_processes
      config.distributed.process_id = process_id
    else:
      config.distributed.enabled = "false"
    return config

  distributed.initialize(make_config({}))
  results, status = [], 0
  for number, phase in enumerate(spec["phases"]):
    start = time.perf_counter()
    config = make_config(phase.get("overrides", {}))
    if phase["mode"] == "train":
      validation = train.train_and_evaluate(config, spec["workdir"],
                                            stop_at_step=phase.get("stop_at_step"))
      # Every process's own view of the run: its last validation figures and
      # the latest checkpoint it finds once all processes are done.
      if num_processes > 1:
        multihost_utils.sync_global_devices(f"phase {number} done")
      store = checkpoints.CheckpointStore(os.path.join(spec["workdir"], "checkpoints"),
                                          read_only=True)
      results.append({"mode": "train", "validation": validation,
                      "latest_checkpoint": store.latest_step()})
      store.close()
    else:
      status = cli.run(phase["mode"], config, spec["workdir"])
      results.append({"mode": phase["mode"], "status": status})
    print(f"[multihost_run] process {process_id}: phase {number} ({phase['mode']}) ended with "
          f"status {status} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    if status:
      break
  info = {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "phases": results}
  with open(os.path.join(spec["out_dir"], f"process_{process_id}.json"), "w",
            encoding="utf-8") as f:
    json.dump(info, f)
  return status


if __name__ == "__main__":
  sys.exit(_worker(sys.argv[1:]))
