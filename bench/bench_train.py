"""Training throughput of a config: examples/s and tokens/s, compile time apart.

  python bench/bench_train.py --config configs/default.py [--steps 50] [--examples 200000] \
      [--config.FIELD=VALUE ...]

Data are freshly generated lines (same distribution as the dataset), batched
by the real input pipeline. Every bucket shape is compiled first (timed
apart); then `--steps` steps are timed end to end, host input work included.
Runs on whatever devices jax sees.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from polyflax import config_files, generate, input_pipeline, sharding, train  # pylint: disable=wrong-import-position
from polyflax import vocab as vocab_lib  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/default.py")
  parser.add_argument("--steps", type=int, default=50, help="timed steps")
  parser.add_argument("--examples", type=int, default=200_000, help="generated training lines")
  args, overrides = parser.parse_known_args()
  config = config_files.load(args.config, overrides)  # --config.FIELD=VALUE, as for main.py

  vocab = vocab_lib.Vocab.default()
  lines = generate.generate_lines(args.examples, seed=1)
  pairs = [line.split("=") for line in lines]
  src = vocab.encode_batch([p[0] for p in pairs], config.max_len)
  tgt = vocab.encode_batch([p[1] for p in pairs], config.max_len)
  mesh = sharding.make_mesh()
  iterator = input_pipeline.TrainIterator(
      src, tgt, batch_size=config.batch_size, seed=0,
      batch_multiple=sharding.global_batch_multiple(mesh), buckets=tuple(config.length_buckets))
  experiment = train.build(config, total_steps=10_000, mesh=mesh)
  num_params = experiment.num_params
  state = experiment.state

  # Compile every bucket shape (one step each), timed apart.
  compile_start = time.perf_counter()
  seen_shapes = set()
  batches = iter(iterator)
  while len(seen_shapes) < len(iterator.batch_shapes()):
    batch = next(batches)
    if batch["inputs"].shape in seen_shapes:
      continue
    seen_shapes.add(batch["inputs"].shape)
    state, sums = experiment.train_step(state, sharding.put_batch(batch, mesh))
    jax.block_until_ready(sums)
  compile_seconds = time.perf_counter() - compile_start

  examples = real_tokens = padded_tokens = 0
  start = time.perf_counter()
  for _ in range(args.steps):
    batch = next(batches)
    state, sums = experiment.train_step(state, sharding.put_batch(batch, mesh))
    examples += int(batch["example_mask"].sum())
    real_tokens += int((batch["inputs"] != 0).sum() + (batch["targets"] != 0).sum())
    padded_tokens += batch["inputs"].size + batch["targets"].size
  jax.block_until_ready(sums)
  seconds = time.perf_counter() - start

  steps_per_epoch = int(round(800_000 * 0.95)) / (examples / args.steps)
  print(f"config: {args.config} {' '.join(overrides)}; {num_params:,} parameters; "
        f"compute dtype {np.dtype(experiment.model_cfg.dtype).name}")
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
  print(f"compile: {compile_seconds:.1f} s for {len(seen_shapes)} batch shapes")
  print(f"timed: {args.steps} steps in {seconds:.2f} s")
  print(f"examples/s: {examples / seconds:,.0f}")
  print(f"tokens/s: {real_tokens / seconds:,.0f} real (source + target), "
        f"{padded_tokens / seconds:,.0f} padded")
  print(f"estimated epoch of 760,000 examples: {steps_per_epoch * seconds / args.steps:.1f} s")


if __name__ == "__main__":
  main()
