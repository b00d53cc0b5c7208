"""The GPU runs of the project, ordered by value, for a lease of 15 minutes in
two calls made back to back (the machine keeps runs/gpu only while warm):

  bash scripts/gpu_runs.sh --call 1 --out DIR    a deadline of {call_1} s
  bash scripts/gpu_runs.sh --call 2 --out DIR    a deadline of {call_2} s

The stages, in their default order (STAGES in scripts/gpu_runs.py: each one's
command, expected seconds, the run it needs trained and the file it ships):
  smoke        configs/tiny.py trained for an epoch, evaluated and exported
  red          configs/default.py, 10 epochs, timed; evaluated on the test
               split (200k lines) and on the real lines
  export_red   red exported into checkpoints/red, packed as red.tar.gz
  decode       bench/bench_decode.py: 200,000 lines decoded greedily, with a
               profile of one batch
  orange       configs/orange.py (red at batch 256), evaluated as red
  best         configs/best.py: bench/bench_train.py measures the speed of
               its training stream, then it trains for as many steps as fit
               the time left in the call (at least {best_min} s, else skipped
               and tried again in the next call), evaluated as red
  export_best  best exported into checkpoints/best, packed as best.tar.gz

Each call runs, in order, the stages not yet done until its deadline
(--budget seconds after it starts; --call 1: {call_1}, --call 2: {call_2}). The
last {margin} s are kept for the summary and the packing: a training still
running then is stopped with SIGTERM, saves a checkpoint and resumes at the
next call; an evaluation still running is stopped and made again at the next
call. A stage that is done (RUNS/STAGE.done) is skipped. A stage that fails
is recorded with the last lines of its log (RUNS/STAGE.failed) and the call
goes on with the next stage; a stage that needs it (export_red needs red's
training) is skipped with that reason. A failed stage is not tried again by
later calls unless named on the command line. STAGE arguments run those
stages only, in the order given.

--plan prints what each of the two calls is expected to run, and when,
from the stages already done in --runs, then exits: nothing starts. Its
times are estimates (see the plan's notes) until a lease has measured them.

Every call ends with the summary (summary.md: each stage's status and
seconds, the runs' figures, the failed stages' log tails) and writes into
--out (default RUNS/out) at most 7 files, none meant to be over 16 MiB:
  gpu_runs.log     everything the call printed
  summary.md       the summary
  results.tar.gz   each run's events, config, eval metrics and timings; the
                   bench figures; each stage's log and status
  profile.tar.gz   the jax profiler trace of one decoding batch (the call
                   that made it)
  red_orange.png   red's and orange's training and validation curves
  red.tar.gz, best.tar.gz   the exported models (the call that exported them)
The exit status is 1 when a stage failed in this call, else 0.

Before the stages it installs the wheels carried in .whl/ for any of
ml_collections and tensorboardX that python3 lacks, and prints the device
and the versions of jax, flax, optax and orbax. --real names the real lines
to evaluate on (default: .carry/real_dev.txt, an ignored copy made for the
GPU machine); they are never trained on.

--rehearse runs the same stages with tiny configs on the CPU, in
runs/rehearse, exporting into runs/rehearse/checkpoints, with a budget of
{rehearsal} s unless --budget or --call says otherwise: the same commands,
files and summary in a few minutes. --runs puts the runs elsewhere (default
runs/gpu, or runs/rehearse). --fail STAGE (or GPU_RUNS_FAIL="STAGE ...")
replaces each command of STAGE by one that fails, to see a failure handled.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import gpu_call
import gpu_plan
from gpu_call import Call, Failed, Skipped
from gpu_plan import Expected, Machine, Ship, Stage

REPO = pathlib.Path(__file__).resolve().parents[1]
CALL_BUDGETS = {1: 520, 2: 225}  # seconds: the two calls of a 15-minute lease
# best trains at this share of the speed its bench measured: validations and
# checkpoints take the rest.
BEST_SPEED_SHARE = 0.9
# The events of the red run that checkpoints/red was exported from (the lease of
# 2026-12-04), which orange's curves are drawn beside when a lease trains orange alone.
SHIPPED_RED_RUN = REPO / "docs" / "records" / "gpu-2026-12-04" / "red"
TRAINING_LIMIT = 100_000  # a training command stops at the call's deadline, not at a limit
SMOKE_EVAL = "--config.eval.limit=200"

GPU = Machine(
    rehearsal=False, runs="runs/gpu", exports="checkpoints", budget=CALL_BUDGETS[1], setup=20,
    # A command that runs past these (training apart, which the deadline
    # stops) has hung or met a far slower machine than planned: it fails.
    # best's bench compiles every training shape first, which took minutes
    # for red on the first lease: 90 s would have failed it.
    short_limit=300, eval_limit=150,
    best_seconds=(120, 100_000), real_limit=(), real=(".carry/real_dev.txt",), platforms="",
    notes="Times from the lease of 2026-12-04 (one H200), rounded up, where a row says so; "
          "the others are estimates. What it measured: docs/results.md, \"Red on one H200\".\n"
          "- compiling is the largest start-up cost there, some seconds per program; set-up "
          "(wheels, versions): {setup} s.")
REHEARSAL = Machine(
    rehearsal=True, runs="runs/rehearse", exports="{runs}/checkpoints", budget=1200, setup=20,
    short_limit=600, eval_limit=600,  # generous: the CPU is shared
    best_seconds=(5, 20), real_limit=("--config.eval.limit=2000",),
    real=("../shared/data/real_dev.txt", ".carry/real_dev.txt"), platforms="cpu",
    notes="Rehearsal on this CPU: tiny configs, seconds guessed for a shared 2-core machine.")


# --- The stages' commands --------------------------------------------------------------------
def main_py(call: Call, config: tuple[str, ...], *flags: str) -> list[str]:
  return [call.python, "main.py", *config, *flags]


def run_config(call: Call, run: str) -> tuple[str, ...]:
  """The config flags of a run; with the max_steps it was sized to, where it was."""
  max_steps = call.runs / f"{run}.max_steps"
  sized = (f"--config.max_steps={max_steps.read_text().strip()}",) if max_steps.exists() else ()
  return call.expected[run].config + sized


def evaluate(call: Call, run: str, folder: str, limit: int, config: tuple[str, ...],
             examples: int = 2) -> None:
  """Evaluates the run into RUNS/RUN/FOLDER, once (its metrics.json marks it made).

  `examples`: lines printed into the stage's log; none of the real lines, which
  must stay out of anything that is fetched and may be kept.
  """
  if (call.runs / run / folder / "metrics.json").is_file():
    return
  call.part(run, folder, limit, main_py(
      call, config, "--workdir", f"{call.runs}/{run}", "--mode=evaluate",
      f"--config.eval.output_dir={call.runs}/{run}/{folder}",
      f"--config.eval.examples_to_print={examples}"))


def train_and_evaluate(call: Call, stage: Stage) -> None:
  """Trains (resuming) to the end or the deadline; evaluates on the test split and real lines."""
  run, config = stage.name, run_config(call, stage.name)
  trained = call.runs / run / "trained"
  if not trained.exists():
    call.part(run, "train", TRAINING_LIMIT,
              main_py(call, config, "--workdir", f"{call.runs}/{run}"))
    trained.parent.mkdir(parents=True, exist_ok=True)
    trained.touch()
  evaluate(call, run, "eval", call.machine.eval_limit, config)
  if call.real:
    evaluate(call, run, "eval_real", call.machine.eval_limit,
             (*config, f"--config.eval.test_file={call.real}", *call.machine.real_limit),
             examples=0)


def smoke(call: Call, stage: Stage) -> None:
  """The tiny config trained, evaluated and exported: the whole chain works on this machine."""
  config, limit = call.expected[stage.name].config, call.machine.short_limit
  workdir = ("--workdir", f"{call.runs}/smoke")
  call.part("smoke", "train", limit, main_py(call, config, *workdir))
  evaluate(call, "smoke", "eval", limit, (*config, SMOKE_EVAL))
  call.part("smoke", "export", limit, main_py(call, config, *workdir, "--mode=export",
                                              f"--config.export.dir={call.runs}/smoke_export"))


def decode(call: Call, stage: Stage) -> None:
  """bench/bench_decode.py, greedy, with a profile of one batch."""
  bench = call.runs / "bench"
  bench.mkdir(parents=True, exist_ok=True)
  shutil.rmtree(bench / "profile_decode", ignore_errors=True)
  call.part("decode", "bench", call.machine.eval_limit, [
      call.python, "bench/bench_decode.py", *call.expected[stage.name].config,
      "--methods", "greedy", "--json", f"{bench}/decode.json",
      "--profile", f"{bench}/profile_decode"])
  call.shipping.add(stage.name)


def bench_best(call: Call, stage: Stage, figures: pathlib.Path) -> None:
  """The speed of best's own training stream (the generated stream its config trains on)."""
  figures.parent.mkdir(parents=True, exist_ok=True)
  expected = call.expected[stage.name]
  logged = call.part("best", "bench", call.machine.short_limit, [
      call.python, "bench/bench_train.py", *expected.config, *expected.bench_flags,
      "--json", str(figures)])
  if not any("generat" in line.lower() for line in logged if not line.startswith("config:")):
    call.note(call.stamp("warning: bench_train.py did not say that it timed the generated stream "
                         "of configs/best.py: best's max_steps rests on the speed it printed"))


def steps_for(call: Call, figures: pathlib.Path, seconds: int) -> int:
  """best's max_steps: `seconds` of training at its share of the measured speed, in hundreds."""
  try:
    steps_per_second = json.loads(figures.read_text(encoding="utf-8")).get("steps_per_second")
  except (OSError, ValueError, AttributeError) as error:
    steps_per_second = None
    call.log(f"error: {error}")
  if not steps_per_second:
    call.log(f"error: no steps_per_second in {figures}")
    call.note(f"failed: cannot size best's training from {figures}")
    raise Failed
  return max(int(steps_per_second * seconds * BEST_SPEED_SHARE) // 100 * 100, 10)


def size_best(call: Call, stage: Stage) -> None:
  """best's max_steps: the steps that fit the time left before its start-up, evaluations, export."""
  figures = call.runs / "bench" / "train_best.json"
  if not figures.exists():
    bench_best(call, stage, figures)
  expected = call.expected[stage.name]
  after = expected.start + expected.after + sum(
      call.expected[other.name].start for other in STAGES if other.needs == stage.name)
  least, most = call.machine.best_seconds
  seconds = min(call.remaining() - after, most)
  if seconds < least:
    why = (f"best: {seconds} s of training would be left, under its {least} s: "
           "tried again by the next call")
    call.note(why)
    raise Skipped(why)
  steps = steps_for(call, figures, seconds)
  sized = call.runs / "best.max_steps.new"
  sized.write_text(f"{steps}\n", encoding="utf-8")
  sized.replace(call.runs / "best.max_steps")
  call.note(f"best: max_steps={steps} for {seconds} s of training at the measured speed")


def best(call: Call, stage: Stage) -> None:
  """configs/best.py for as many steps as fit the call, sized once by its bench."""
  if not (call.runs / "best.max_steps").exists():
    size_best(call, stage)
  train_and_evaluate(call, stage)


def export(call: Call, stage: Stage) -> None:
  """The run the stage needs, exported into EXPORTS/RUN."""
  run = stage.needs
  call.part(run, "export", call.machine.short_limit, main_py(
      call, run_config(call, run), "--workdir", f"{call.runs}/{run}", "--mode=export",
      f"--config.export.dir={call.exports}/{run}"))
  call.shipping.add(stage.name)


# --- What the stages ship ----------------------------------------------------------------------
def pack_folder(call: Call, stage: Stage, folder: pathlib.Path) -> None:
  """OUT/FILE of `folder`, where the stage made it in this call."""
  if stage.name in call.shipping and folder.is_dir():
    with tarfile.open(call.out / stage.ships.file, "w:gz") as packed:
      packed.add(folder, arcname=folder.name)


def pack_export(call: Call, stage: Stage) -> None:
  if (call.exports / stage.needs / "model.json").is_file():
    pack_folder(call, stage, call.exports / stage.needs)


def pack_profile(call: Call, stage: Stage) -> None:
  pack_folder(call, stage, call.runs / "bench" / "profile_decode")


def plot_red_orange(call: Call, stage: Stage) -> None:
  """red's and orange's curves, once orange has events: red's of this lease where it trained
  red, else those of the red that checkpoints/red was exported from (SHIPPED_RED_RUN)."""
  red = call.runs / "red" if (call.runs / "red" / "trained").exists() else SHIPPED_RED_RUN
  if not any(red.glob("events.out.tfevents.*")) or not any(
      (call.runs / "orange").glob("events.out.tfevents.*")):
    return
  plotted = subprocess.run(
      [call.python, "scripts/plot_runs.py", str(red), f"{call.runs}/orange",
       "--out", str(call.out / stage.ships.file),
       "--title", "red (batch 512) and orange (batch 256)"],
      capture_output=True, env=call.env, check=False)
  if plotted.returncode:
    print("warning: no plot of red and orange (matplotlib?)")


# --- The stage table ---------------------------------------------------------------------------
# Expected seconds: start-up (best's bench apart), training, the evaluations
# after it. On the GPU, estimates until a lease measures them (the plan prints
# each row's `why`); in the rehearsal, guesses for a shared CPU.
TINY = ("--config", "configs/tiny.py", "--config.data_dir={runs}/inputs",
        "--config.generated_size=3000")
SMOKE_WHAT = "configs/tiny.py, 1 epoch: trained, evaluated on 200 lines, exported"
STAGES = (
    Stage("smoke", "once", smoke,
          gpu=Expected(SMOKE_WHAT, start=50,  # as on 2026-12-04
                       config=("--config", "configs/tiny.py",
                               "--config.data_dir={runs}/inputs_tiny", "--config.max_epochs=1")),
          rehearsal=Expected(SMOKE_WHAT, start=60,
                             config=("--config", "configs/tiny.py",
                                     "--config.data_dir={runs}/inputs_smoke",
                                     "--config.max_epochs=1"))),
    Stage("red", "train", train_and_evaluate,
          gpu=Expected("configs/default.py, 10 epochs (~14,800 steps of 512); evaluated on the "
                       "test split (200k lines) and the real lines",
                       start=170, train=245, after=90, config=("--config", "configs/default.py"),
                       why="as on 2026-12-04: {start} s of start-up and compiling, {train} s "
                           "of steps, validations and checkpoints, {after} s for the two "
                           "evaluations (each compiling its decoder)."),
          rehearsal=Expected("configs/tiny.py, 2 epochs, for configs/default.py; evaluated on "
                             "its test split and 2,000 real lines",
                             start=40, train=15, after=50,
                             config=(*TINY, "--config.max_epochs=2"))),
    Stage("export_red", "export", export, needs="red", ships=Ship("red.tar.gz", pack_export),
          gpu=Expected("into {exports}/red, packed as red.tar.gz", start=30),  # as on 2026-12-04
          rehearsal=Expected("into {exports}/red, packed as red.tar.gz", start=20)),
    Stage("decode", "once", decode, ships=Ship("profile.tar.gz", pack_profile),
          gpu=Expected("bench_decode.py: 200,000 lines, greedy, batch 4096, one profiled batch",
                       start=35, config=("--config", "configs/default.py", "--num", "200000",
                                         "--batch_size", "4096")),
          rehearsal=Expected("bench_decode.py: 2,000 generated lines, greedy, batch 256, one "
                             "profiled batch",
                             start=30, config=("--config", "configs/tiny.py", "--num", "2000",
                                               "--batch_size", "256"))),
    Stage("orange", "train", train_and_evaluate, ships=Ship("red_orange.png", plot_red_orange),
          gpu=Expected("configs/orange.py, 10 epochs (~29,700 steps of 256); evaluated as red",
                       start=170, train=440, after=90, config=("--config", "configs/orange.py"),
                       why="{train} s of training: twice red's steps (batch 256), each assumed "
                           "to cost what red's did, since a step of this 4M-parameter "
                           "model is bound by the host and launches, not arithmetic; start-up "
                           "and evaluations as red's."),
          rehearsal=Expected("configs/tiny.py at batch 32, for configs/orange.py; evaluated as red",
                             start=40, train=20, after=50,
                             config=(*TINY, "--config.max_epochs=2", "--config.batch_size=32"))),
    Stage("best", "best", best,
          gpu=Expected("bench_train.py of configs/best.py's generated stream (300 steps), then "
                       "configs/best.py for the steps that fit (at least {best_min} s); "
                       "evaluated as red",
                       bench=180, start=170, after=90, config=("--config", "configs/best.py"),
                       bench_flags=("--steps", "300"),
                       why="{bench} s of bench (compiling, as red did, and 300 steps), {start} s "
                           "of start-up, "
                           "then it trains for the time left before the evaluations it still "
                           "needs and its export, at the speed the bench measured ({best_share} "
                           "of it); under {best_min} s it is skipped until a later call."),
          rehearsal=Expected("bench_train.py of its generated stream, then configs/tiny.py on "
                             "generated lines for {best_min}-{best_max} s; evaluated as red",
                             bench=30, start=40, after=50,
                             config=(*TINY, "--config.train_data=generated"),
                             bench_flags=("--steps", "20", "--examples", "4000"))),
    Stage("export_best", "export", export, needs="best", ships=Ship("best.tar.gz", pack_export),
          gpu=Expected("into {exports}/best, packed as best.tar.gz", start=30),
          rehearsal=Expected("into {exports}/best, packed as best.tar.gz", start=20)),
)
STAGE_NAMES = [stage.name for stage in STAGES]


# --- Options ------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
  """Errors are one line `error: ...`, status 2."""

  def error(self, message: str):
    usage_error(message)


def usage_error(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_options(argv: list[str]) -> argparse.Namespace:
  """The options, checked; `order` is the stages to run, `named` those the command line named."""
  parser = Parser(
      prog="bash scripts/gpu_runs.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
      usage="%(prog)s [--call N | --budget SECONDS] [--out DIR] [--runs DIR] [--real FILE]\n"
            "         [--fail STAGE]... [--plan] [--rehearse] [STAGE ...]",
      description=__doc__.format(call_1=CALL_BUDGETS[1], call_2=CALL_BUDGETS[2],
                                 margin=gpu_plan.END_MARGIN, rehearsal=REHEARSAL.budget,
                                 best_min=GPU.best_seconds[0]))
  parser.add_argument("--rehearse", action="store_true", help="tiny configs on this CPU")
  parser.add_argument("--plan", action="store_true",
                      help="print the plan of the calls; run nothing")
  parser.add_argument("--call", default="", help="1 or 2: the call of the lease")
  parser.add_argument("--budget", default="", help="the call's deadline, in whole seconds")
  parser.add_argument("--out", default="", help="the folder of the files to fetch (RUNS/out)")
  parser.add_argument("--runs", default="", help="the runs folder (runs/gpu, runs/rehearse)")
  parser.add_argument("--real", default="", help="the real lines to evaluate on")
  parser.add_argument("--fail", action="append", default=[], help="a stage made to fail")
  parser.add_argument("stages", nargs="*", metavar="STAGE", help=" ".join(STAGE_NAMES))
  options, unknown = parser.parse_known_intermixed_args(argv)
  for argument in unknown + [name for name in options.stages if name not in STAGE_NAMES]:
    usage_error(f"unknown argument {argument} (stages: {' '.join(STAGE_NAMES)}; see --help)")
  options.fail += os.environ.get("GPU_RUNS_FAIL", "").replace(",", " ").split()
  for name in options.fail:
    if name not in STAGE_NAMES:
      usage_error(f"--fail {name} is not a stage ({' '.join(STAGE_NAMES)})")
  if options.call not in ("", "1", "2"):
    usage_error(f"--call takes 1 or 2, not '{options.call}'")
  if options.budget and not options.budget.isdigit():
    usage_error(f"--budget takes whole seconds, not '{options.budget}'")
  options.named, options.order = options.stages, options.stages or STAGE_NAMES
  return options


def budget_of(options: argparse.Namespace, machine: Machine) -> int:
  if options.budget:
    return int(options.budget)
  return CALL_BUDGETS[int(options.call)] if options.call else machine.budget


def real_lines(options: argparse.Namespace, machine: Machine) -> str:
  """--real, else the first of the machine's places for real lines that holds a file, else ""."""
  return options.real or next((path for path in machine.real if os.path.isfile(path)), "")


def print_plan(options: argparse.Namespace, machine: Machine, runs: pathlib.Path,
               expected: dict[str, Expected]) -> None:
  """This call and, for a first call with no --budget, the second one after it."""
  budgets = [budget_of(options, machine)]
  if not (machine.rehearsal or options.budget or options.call == "2"):
    budgets.append(CALL_BUDGETS[2])
  print("\n".join(gpu_plan.plan(machine, list(STAGES), expected, options.order, options.named,
                                runs, budgets, int(options.call or 1))))


# --- The call -----------------------------------------------------------------------------------
def child_env(machine: Machine, runs: pathlib.Path) -> dict[str, str]:
  """The commands' environment: compiled programs kept between the calls of a lease.

  The checkout comes first on PYTHONPATH: the GPU machine runs polyflax from it,
  uninstalled, and the scripts of bench/ and scripts/ (whose own folder, not the
  checkout, is on their sys.path) import it too. Without it, the first lease's
  decode bench failed there with "No module named 'polyflax'".
  """
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO), *(path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path)])
  env["JAX_COMPILATION_CACHE_DIR"] = env.get("JAX_COMPILATION_CACHE_DIR") or f"{runs}/jax_cache"
  if machine.platforms:
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS") or machine.platforms
  return env


def open_call(options, machine, runs, out, expected) -> Call:
  """The call's folders, its number (RUNS/calls_made), and its settings."""
  (runs / "logs").mkdir(parents=True, exist_ok=True)
  made = runs / "calls_made"
  number = int(made.read_text().strip() or 0) + 1 if made.exists() else 1
  made.write_text(f"{number}\n", encoding="utf-8")
  return Call(machine=machine, expected=expected, runs=runs, out=out,
              exports=pathlib.Path(machine.exports.format(runs=runs)),
              real=real_lines(options, machine), number=number,
              budget=budget_of(options, machine),
              python=os.environ.get("PYTHON") or "python3", env=child_env(machine, runs),
              fail=frozenset(options.fail))


def announce(call: Call, options: argparse.Namespace) -> None:
  """The call's folders, deadline, stages and real lines; warnings about them."""
  call.say(f"runs in {call.runs}, outputs in {call.out}; deadline in {call.budget} s; "
           f"stages: {' '.join(options.order)}; real lines: {call.real or 'none'}")
  if call.real and not os.path.isfile(call.real):
    call.say(f"warning: no real lines at {call.real}: their evaluations are skipped")
    call.real = ""
  if options.call == "2" and call.number == 1:
    call.say(f"warning: --call 2 finds no earlier call in {call.runs} (a fresh machine?): "
             "starting from the first stage")


def run_call(call: Call, options: argparse.Namespace) -> int:
  """Set-up, the stages, then (whatever happened) the summary and the files; the exit status."""
  try:
    announce(call, options)
    if gpu_call.setup(call):
      gpu_call.run_stages(call, list(STAGES), options.order, options.named)
    else:
      call.record("setup", "failed", 0, "the Python environment cannot run polyflax "
                  "(see gpu_runs.log)")
      call.failed.append("setup")
  finally:
    status = gpu_call.finish(call, list(STAGES), options.order)
  return status


def main(argv: list[str]) -> int:
  os.chdir(REPO)
  options = parse_options(argv)
  machine = REHEARSAL if options.rehearse else GPU
  runs = pathlib.Path(options.runs or machine.runs)
  expected = gpu_plan.expected_on(machine, list(STAGES), {
      "runs": runs, "exports": machine.exports.format(runs=runs),
      "best_min": machine.best_seconds[0], "best_max": machine.best_seconds[1],
      "best_share": f"{BEST_SPEED_SHARE:.0%}"})
  if options.plan:
    print_plan(options, machine, runs, expected)
    return 0
  out = pathlib.Path(options.out or runs / "out")
  out.mkdir(parents=True, exist_ok=True)
  with gpu_call.tee_output(out / "gpu_runs.log"):
    return run_call(open_call(options, machine, runs, out, expected), options)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
