"""Times generating 1,000,000 lines in one process and prints lines per second.

Usage: python bench/bench_generate.py [--n 1000000] [--seed 0] [--repeats 3]
"""

import argparse
import sys
import time

from polyflax import generate  # pylint: disable=wrong-import-position

TARGET_SECONDS_PER_MILLION = 30.0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=1_000_000, help="lines to generate")
  parser.add_argument("--seed", type=int, default=0, help="random seed")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs (the best is reported)")
  args = parser.parse_args()
  timings = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    lines = generate.generate_lines(args.n, args.seed)
    timings.append(time.perf_counter() - start)
    assert len(lines) == args.n
    del lines
  best = min(timings)
  per_million = best * 1_000_000 / args.n
  print(f"generated {args.n} lines: best {best:.2f} s of {args.repeats} "
        f"({', '.join(f'{t:.2f}' for t in timings)} s), {args.n / best:,.0f} lines/s")
  print(f"{per_million:.1f} s per 1,000,000 lines (target <= {TARGET_SECONDS_PER_MILLION:.0f} s): "
        f"{'ok' if per_million <= TARGET_SECONDS_PER_MILLION else 'TOO SLOW'}")
  return 0 if per_million <= TARGET_SECONDS_PER_MILLION else 1


if __name__ == "__main__":
  sys.exit(main())
