"""Decoding throughput: the cached decoders against the recompute decoder.

Decodes the same factored expressions with
  * greedy: `decode.greedy_decode`, one token per step through a key/value cache,
  * beam:   `decode.beam_search` with --beam_size beams, also cached,
  * recompute: `decode.recompute_greedy_decode`, the reference's method, which
    runs the whole (max_len-wide) prefix through the decoder at every step,
each through `decode.Decoder` (length buckets, batches sharded over every
device), and reports sequences per second with compilation timed apart, and
each method's speed as a ratio to recompute's, all from one run.

Parameters are random (the config's model shape) unless --workdir names a
trained run, whose best checkpoint is restored. An untrained model rarely
emits eos, so with random parameters every batch runs all max_len steps: the
most work per sequence, for every method alike.

Runs under tcmalloc where it is installed, as the polyflax command does
(POLYFLAX_TCMALLOC=0: the system's malloc); the output says which.

Usage:
  python bench/bench_decode.py [--config configs/default.py] [--workdir RUN]
      [--num 2048] [--batch_size 512] [--beam_size 4]
      [--methods greedy,beam,recompute] [--data FILE] [--json OUT] [--config.FIELD=VALUE ...]

--workdir takes a training run or an exported model folder (checkpoints/NAME).
"""

import argparse
import functools
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

from polyflax import allocator  # pylint: disable=g-import-not-at-top

# Before jax is loaded, as the polyflax command does: the bench measures what users run.
if __name__ == "__main__":
  allocator.use_tcmalloc()

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from polyflax import config_files  # pylint: disable=g-import-not-at-top
from polyflax import data as data_lib  # pylint: disable=g-import-not-at-top
from polyflax import decode  # pylint: disable=g-import-not-at-top
from polyflax import input_pipeline  # pylint: disable=g-import-not-at-top
from polyflax import generate  # pylint: disable=g-import-not-at-top
from polyflax import inference  # pylint: disable=g-import-not-at-top
from polyflax import model_setup  # pylint: disable=g-import-not-at-top
from polyflax import sharding  # pylint: disable=g-import-not-at-top
from polyflax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top

METHODS = ("greedy", "beam", "recompute")


def model_and_params(config, workdir: str | None):
  """(graphdef, params, vocab, mesh, max_len, where the parameters came from)."""
  if workdir:
    model = inference.restore_for_inference(config, workdir)
    return (model.graphdef, model.params, model.vocab, model.mesh, model.model_cfg.max_len,
            model.source)
  mesh = sharding.make_mesh()
  vocab = vocab_lib.Vocab.default()
  graphdef, params = model_setup.create_model(model_setup.model_config(config, vocab.size),
                                              config.seed)
  return (graphdef, sharding.put_replicated(params, mesh), vocab, mesh, config.max_len,
          f"random (seed {config.seed})")


def factored_sides(num: int, data_file: str | None, seed: int) -> list[str]:
  """`num` factored expressions: the first lines of `data_file`, or generated ones."""
  if data_file:
    pairs = data_lib.read_pairs(data_file).pairs[:num]
    if len(pairs) < num:
      raise SystemExit(f"{data_file} has only {len(pairs)} lines; lower --num")
    return [factored for factored, _ in pairs]
  return [line.split("=")[0] for line in generate.generate_lines(num, seed)]


def decode_fn(method: str, max_len: int, beam_size: int, length_penalty: float):
  if method == "greedy":
    return functools.partial(decode.greedy_decode, max_len=max_len)
  if method == "beam":
    return functools.partial(decode.beam_search, max_len=max_len, beam_size=beam_size,
                             alpha=length_penalty)
  return functools.partial(decode.recompute_greedy_decode, max_len=max_len)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=str(REPO / "configs" / "default.py"),
                      help="config file: the model shape, max_len and length buckets; "
                      "--config.FIELD=VALUE overrides as for main.py")
  parser.add_argument("--workdir", default=None, help="restore this run's best checkpoint")
  parser.add_argument("--num", type=int, default=2048, help="sequences decoded per method")
  parser.add_argument("--batch_size", type=int, default=512,
                      help="sequences per batch of the longest bucket (shorter buckets hold more)")
  parser.add_argument("--beam_size", type=int, default=4)
  parser.add_argument("--length_penalty", type=float, default=0.6)
  parser.add_argument("--methods", default=",".join(METHODS),
                      help=f"comma-separated, of {', '.join(METHODS)}")
  parser.add_argument("--data", default=None, help="factored=expanded lines (default: generated)")
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--json", default=None, help="also write the figures here")
  parser.add_argument("--profile", default=None,
                      help="trace one more decoding pass of the first method's first batch with "
                      "jax.profiler into this folder")
  args, overrides = parser.parse_known_args(argv)
  methods = [name.strip() for name in args.methods.split(",") if name.strip()]
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise SystemExit(f"unknown methods {unknown}; choose from {METHODS}")

  config = config_files.load(args.config, overrides)
  graphdef, params, vocab, mesh, max_len, source = model_and_params(config, args.workdir)
  sources = factored_sides(args.num, args.data, args.seed)
  source_ids = vocab.encode_batch(sources, max_len)
  devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"{len(sources):,} sequences, batch {args.batch_size} (longest bucket), buckets "
        f"{tuple(config.length_buckets)}, max_len {max_len}, parameters {source}, "
        f"devices {devices}", flush=True)
  print(f"allocator: {allocator.describe()}", flush=True)

  results, outputs = {}, {}
  for method in methods:
    decoder = decode.Decoder(graphdef, params, vocab, mesh, max_len=max_len,
                             batching=input_pipeline.batching(config, mesh),
                             decode_fn=decode_fn(method, max_len, args.beam_size,
                                                 args.length_penalty))
    compile_seconds = decoder.warm_up(source_ids, batch_size=args.batch_size)
    start = time.perf_counter()
    outputs[method] = decoder.decode_ids(source_ids, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    results[method] = {
        "sequences_per_second": len(sources) / seconds,
        "decode_seconds": seconds,
        "compile_seconds": compile_seconds,
        "mean_output_tokens": float(np.mean([len(vocab.encode(text, add_eos=False))
                                             for text in outputs[method]])),
    }
    print(f"{method:>9}: {results[method]['sequences_per_second']:10,.1f} sequences/s "
          f"({seconds:.2f} s; compilation {compile_seconds:.1f} s apart)", flush=True)
    if args.profile and method == methods[0]:
      first_batch = next(iter(decoder.batches(source_ids, args.batch_size)))
      with jax.profiler.trace(args.profile):
        jax.block_until_ready(decoder.decode_batch(first_batch["inputs"]))
      print(f"profile of one {method} batch of {len(first_batch['inputs'])}: {args.profile}")

  if "recompute" in results:
    baseline = results["recompute"]["sequences_per_second"]
    for method, figures in results.items():
      figures["speedup_over_recompute"] = figures["sequences_per_second"] / baseline
    print("speed-up over recompute: " + ", ".join(
        f"{method} {figures['speedup_over_recompute']:.1f}x" for method, figures in results.items()
        if method != "recompute"))
    if "greedy" in outputs:
      same = np.mean([a == b for a, b in zip(outputs["greedy"], outputs["recompute"])])
      results["greedy"]["same_output_as_recompute"] = float(same)
      print(f"greedy and recompute agree on {same:.2%} of the sequences")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"devices": devices, "num": len(sources), "batch_size": args.batch_size,
                 "beam_size": args.beam_size, "parameters": source, "config": args.config,
                 "allocator": allocator.describe(), "results": results}, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
