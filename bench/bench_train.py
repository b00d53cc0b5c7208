"""Training throughput of a config: examples/s and tokens/s, compile time apart.

  python bench/bench_train.py --config configs/default.py [--steps 50] [--examples 200000] \
      [--config.FIELD=VALUE ...]

Data are what the config trains on, batched by the input pipeline with the
config's batching: for `train_data="split"`, `--examples` generated lines
standing in for the train split (same distribution), shuffled into batches;
for `train_data="generated"`, the generated stream itself, `--examples`
fresh lines an epoch, each next epoch made in a worker process as in
training. The output says which. Every batch shape is compiled first, as
training does (timed apart); then `--steps` steps are timed end to end, host
input work included. Runs on whatever devices jax sees. `--json` writes the
figures; `--profile DIR` traces a few more steps with jax's profiler.
Runs under tcmalloc where it is installed, as the polyflax command does
(POLYFLAX_TCMALLOC=0: the system's malloc); the output says which.
"""

import argparse
import json
import time

from polyflax import allocator  # pylint: disable=g-import-not-at-top

# Before jax is loaded, as the polyflax command does: the bench measures what users run.
if __name__ == "__main__":
  allocator.use_tcmalloc()

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from polyflax import config_files, example_sources, generate, input_pipeline, sharding  # pylint: disable=wrong-import-position
from polyflax import training_streams  # pylint: disable=wrong-import-position
from polyflax import experiment as experiment_lib  # pylint: disable=wrong-import-position
from polyflax import vocab as vocab_lib  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/default.py")
  parser.add_argument("--steps", type=int, default=50, help="timed steps")
  parser.add_argument("--examples", type=int, default=200_000, help="generated training lines")
  parser.add_argument("--json", default=None, help="also write the figures here")
  parser.add_argument("--profile", default=None,
                      help="trace --profile_steps more steps with jax.profiler into this folder")
  parser.add_argument("--profile_steps", type=int, default=5)
  args, overrides = parser.parse_known_args()
  config = config_files.load(args.config, overrides)  # --config.FIELD=VALUE, as for main.py

  vocab = vocab_lib.Vocab.default()
  mesh = sharding.make_mesh()
  batching = input_pipeline.batching(config, mesh)
  if config.train_data == "generated":
    iterator = training_streams.GeneratedTrainIterator(
        example_sources.generated_examples(vocab, config.max_len, config.data_seed, args.examples),
        batch_size=config.batch_size, seed=config.seed, batching=batching)
    data_kind = (f"the generated stream ({args.examples:,} fresh lines an epoch, "
                 "the next epoch made in a worker process)")
  else:
    lines = generate.generate_lines(args.examples, seed=1)
    pairs = [line.split("=") for line in lines]
    src = vocab.encode_batch([p[0] for p in pairs], config.max_len)
    tgt = vocab.encode_batch([p[1] for p in pairs], config.max_len)
    iterator = training_streams.TrainIterator(src, tgt, batch_size=config.batch_size,
                                              seed=config.seed, batching=batching)
    data_kind = f"a fixed split of {args.examples:,} generated lines"
  experiment, state = experiment_lib.build(config, total_steps=10_000, mesh=mesh)

  # Compile every bucket shape as training does, timed apart.
  compile_start = time.perf_counter()
  num_shapes = experiment_lib.compile_train_step(experiment, state, iterator.shapes)
  compile_seconds = time.perf_counter() - compile_start

  batches = iter(iterator)
  examples = real_tokens = padded_tokens = 0
  start = time.perf_counter()
  for _ in range(args.steps):
    batch = next(batches)
    state, sums = experiment.train_step(state, experiment.train_batch(batch))
    examples += int(batch["example_mask"].sum())
    real_tokens += int((batch["inputs"] != 0).sum() + (batch["targets"] != 0).sum())
    padded_tokens += batch["inputs"].size + batch["targets"].size
  jax.block_until_ready(sums)
  seconds = time.perf_counter() - start

  if args.profile:
    # A few more steps under jax's profiler (a trace TensorBoard's profile tab reads).
    with jax.profiler.trace(args.profile):
      for _ in range(args.profile_steps):
        batch = next(batches)
        state, sums = experiment.train_step(state, experiment.train_batch(batch))
      jax.block_until_ready(sums)

  split_examples = 760_000
  figures = {
      "config": args.config, "overrides": overrides, "parameters": experiment.num_params,
      "train_data": config.train_data, "data": data_kind,
      "compute_dtype": np.dtype(experiment.model_cfg.dtype).name,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "allocator": allocator.describe(),
      "batch_shapes": sorted(iterator.shapes),
      "compile_seconds": compile_seconds, "steps": args.steps, "seconds": seconds,
      "steps_per_second": args.steps / seconds, "examples_per_second": examples / seconds,
      "examples_per_step": examples / args.steps,
      "real_tokens_per_second": real_tokens / seconds,
      "padded_tokens_per_second": padded_tokens / seconds,
      "estimated_epoch_seconds": split_examples / (examples / seconds),
  }
  print(f"config: {args.config} {' '.join(overrides)}; {experiment.num_params:,} "
        f"parameters; compute dtype {figures['compute_dtype']}")
  print(f"data: {data_kind} (train_data={config.train_data!r})")
  print(f"devices: {figures['devices']}")
  print(f"allocator: {figures['allocator']}")
  print(f"compile: {compile_seconds:.1f} s for {num_shapes} batch shapes")
  print(f"timed: {args.steps} steps in {seconds:.2f} s ({figures['steps_per_second']:,.1f} steps/s, "
        f"{figures['examples_per_step']:,.0f} examples/step)")
  print(f"examples/s: {figures['examples_per_second']:,.0f}")
  print(f"tokens/s: {figures['real_tokens_per_second']:,.0f} real (source + target), "
        f"{figures['padded_tokens_per_second']:,.0f} padded")
  print(f"estimated epoch of {split_examples:,} examples: "
        f"{figures['estimated_epoch_seconds']:.1f} s")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(figures, f, indent=2)
  if args.profile:
    print(f"profile of {args.profile_steps} steps: {args.profile}")
  iterator.close()


if __name__ == "__main__":
  main()
