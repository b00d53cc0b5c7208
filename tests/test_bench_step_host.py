"""bench/bench_step_host.py: the host's work around a training step, timed apart."""

import json
import pathlib
import sys

import forked_python  # tests/: subprocesses forked from one that has imported jax

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_it_times_the_state_as_held_and_as_plain_arrays_and_a_batch(tmp_path):
  out = tmp_path / "host.json"
  result = forked_python.run(
      [sys.executable, "bench/bench_step_host.py", "--config", "configs/tiny.py", "--repeats",
       "5", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  figures = json.loads(out.read_text(encoding="utf-8"))
  # The tiny model's parameters, their two Adam moments, the step and the key, at least.
  assert figures["state_arrays"] > 3 * 10
  for name in ("state_flatten_ms", "state_unflatten_ms", "plain_flatten_ms",
               "plain_unflatten_ms", "put_batch_ms"):
    assert figures[name] > 0, name
  assert figures["batch"] == [64, 32]
  assert "as one flat dict" in result.stdout
