"""One call of scripts/gpu_runs.py: its clock, console and logs, its stages and commands, its end.

Each stage ready to run (not done, not failed before unless named, its run
trained, time left) runs its command; it ends done, unfinished (the deadline),
skipped or failed, recorded in RUNS/stages.tsv, and a failure does not end
the call. A command runs until its limit or the call's deadline, whichever is first;
its output (progress bars left out) goes to its stage's log and to the
console (examples left out); its seconds and exit status are appended to
RUNS/RUN.calls. The call's console is also appended to OUT/gpu_runs.log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback

import gpu_plan

# Output lines kept out of the stage logs: progress bars and blank lines.
PROGRESS = re.compile(r"^(train|decode|training lines|generate):|^\s*$")
# Stage log lines kept off the console: the examples an evaluation prints.
EXAMPLES = re.compile(r"^(Input|Target|Predicted|score):")
# The lines of a failed attempt that say why it failed.
ERROR = re.compile(r"^error: |[A-Za-z]+(Error|Exception): ")
# A command stopped at its limit gets SIGTERM, then SIGKILL this much later.
KILL_AFTER = 15
# A command is not started with less than this left of the call's work time.
LEAST_COMMAND_SECONDS = 10
# Files of the output folder are meant to stay under this size.
MOST_OUTPUT_BYTES = 16 * 1024 * 1024
STOPPED, KILLED = 124, 137  # the exit statuses of `timeout` for a command stopped and killed


class Unfinished(Exception):
  """Stopped, or not started, for the call's deadline: the next call goes on."""


class Failed(Exception):
  """A command failed (its exit status, or it ran past its limit)."""


class Skipped(Exception):
  """Not run in this call, for the reason its message gives."""


class Tee:
  """A text stream writing to a terminal stream and to a log file."""

  def __init__(self, *streams):
    self.streams, self.lock = streams, threading.Lock()

  def write(self, text: str) -> int:
    with self.lock:
      for stream in self.streams:
        stream.write(text)
        stream.flush()
    return len(text)

  def flush(self) -> None:
    for stream in self.streams:
      stream.flush()


@contextlib.contextmanager
def tee_output(log_path: pathlib.Path):
  """Within it, all that is printed, errors too, goes to standard output and to `log_path`."""
  with open(log_path, "a", encoding="utf-8") as log:
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = Tee(sys.stdout, log)
    try:
      yield
    finally:
      sys.stdout, sys.stderr = saved


def stream_lines(pipe, handle) -> None:
  """Calls handle(line) for each line of `pipe`, a carriage return ending a line too."""
  pending = b""
  while chunk := pipe.read1(65536):
    *lines, pending = re.split(rb"\r|\n", pending + chunk)
    for line in lines:
      handle(line.decode("utf-8", errors="replace"))
  if pending:
    handle(pending.decode("utf-8", errors="replace"))


def stop_group(process: subprocess.Popen, sent: signal.Signals) -> None:
  with contextlib.suppress(ProcessLookupError):
    os.killpg(process.pid, sent)


def wait_within(process: subprocess.Popen, limit: float) -> int:
  """The exit status, as `timeout --signal=TERM --kill-after=15 LIMIT` would give it."""
  try:
    status = process.wait(timeout=limit)
    return status if status >= 0 else 128 - status
  except subprocess.TimeoutExpired:
    stop_group(process, signal.SIGTERM)
  except BaseException:
    stop_group(process, signal.SIGTERM)
    raise
  try:
    process.wait(timeout=KILL_AFTER)
    return STOPPED
  except subprocess.TimeoutExpired:
    stop_group(process, signal.SIGKILL)
    process.wait()
    return KILLED


def run_command(command: list[str], limit: float, env: dict[str, str], handle) -> int:
  """Runs `command` (and what it starts) for at most `limit` seconds; handle(line) of its output."""
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=True)
  reader = threading.Thread(target=stream_lines, args=(process.stdout, handle), daemon=True)
  reader.start()
  status = wait_within(process, limit)
  reader.join(timeout=60)
  process.stdout.close()
  return status


def failing_command(python: str, name: str, stage: str) -> list[str]:
  """The command that replaces each of a stage's commands under --fail."""
  return [python, "-c", f"import sys; print('{name} of stage {stage}: about to fail'); "
          f"sys.exit('error: a failure injected into stage {stage} (--fail)')"]


@dataclasses.dataclass
class Call:
  """One call: where it writes, its deadline, its children's environment, the stage it runs."""
  machine: gpu_plan.Machine
  expected: dict[str, gpu_plan.Expected]  # each stage's, on this machine
  runs: pathlib.Path
  out: pathlib.Path
  exports: pathlib.Path
  real: str  # the real lines evaluated on, or "" for none
  number: int  # 1 for the first call on this runs folder
  budget: int
  python: str  # the interpreter of its commands
  env: dict[str, str]
  fail: frozenset[str]  # stages whose commands are made to fail
  started: float = dataclasses.field(default_factory=time.time)  # time.time() at its start
  stage: str = ""
  stage_log: pathlib.Path | None = None
  shipping: set[str] = dataclasses.field(default_factory=set)  # stages whose file it made
  failed: list[str] = dataclasses.field(default_factory=list)

  def remaining(self) -> int:
    """Seconds of work left: the call's deadline less the margin kept for its end."""
    return int(self.started + self.budget - gpu_plan.END_MARGIN - time.time())

  def stamp(self, text: str) -> str:
    """`text` after the clock, the call and the work time left."""
    clock = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    return f"[gpu_runs {clock}, call {self.number}, {self.remaining()} s of work left] {text}"

  def say(self, text: str) -> None:
    print(self.stamp(text))

  def log(self, text: str) -> None:
    """Appends a line to the stage's log."""
    if self.stage_log:
      with open(self.stage_log, "a", encoding="utf-8") as log:
        log.write(text + "\n")

  def note(self, text: str) -> None:
    """Prints a line and appends it to the stage's log."""
    print(text)
    self.log(text)

  def record(self, stage: str, status: str, seconds: int, note: str) -> None:
    """One line of the stage ledger, RUNS/stages.tsv."""
    with open(self.runs / "stages.tsv", "a", encoding="utf-8") as ledger:
      ledger.write(f"{self.number}\t{stage}\t{status}\t{seconds}\t{note}\n")

  def part(self, run: str, name: str, limit: int, command: list[str]) -> list[str]:
    """Runs one command of the stage as part `name` of `run`; returns the lines it logged.

    Raises Unfinished where the deadline stopped it or left it no time,
    Failed where it exited with an error or ran past `limit` seconds.
    """
    left = self.remaining()
    if min(left, limit) < LEAST_COMMAND_SECONDS:
      self.note(f"{name}: not started, {left} s of work left in this call")
      raise Unfinished
    if self.stage in self.fail:
      command = failing_command(self.python, name, self.stage)
    self.log("$ " + " ".join(command))
    logged: list[str] = []
    begin = time.monotonic()
    status = run_command(command, min(left, limit), self.env,
                         lambda line: self._output(line, logged))
    milliseconds = int((time.monotonic() - begin) * 1000)
    with open(self.runs / f"{run}.calls", "a", encoding="utf-8") as calls:
      calls.write(f"{name}\t{milliseconds // 1000}.{milliseconds % 1000:03d}\t{status}\n")
    if status in (STOPPED, KILLED) and left < limit:
      self.note(f"{name}: stopped at the end of the call's work time, after "
                f"{milliseconds // 1000} s")
      raise Unfinished
    if status in (STOPPED, KILLED):
      self.note(f"failed: {name} ran past its limit of {limit} s")
      raise Failed
    if status:
      self.note(f"failed: {name} exited with status {status}")
      raise Failed
    return logged

  def _output(self, line: str, logged: list[str]) -> None:
    if PROGRESS.search(line):
      return
    self.log(line)
    logged.append(line)
    if not EXAMPLES.match(line):
      print(line)


def failure_record(stage: str, attempt: list[str]) -> str:
  """RUNS/STAGE.failed: why (the `failed:` line and the last error line), then the log's tail."""
  reasons = [line for line in attempt if line.startswith("failed: ")]
  errors = [line for line in attempt if not line.startswith("failed: ") and ERROR.search(line)]
  reason = reasons[-1].removeprefix("failed: ") if reasons else "status 1"
  tail = [line for line in attempt if not line.startswith("$ ")][-15:]
  return "\n".join([reason + (f"; {errors[-1]}" if errors else ""),
                    f"last lines of logs/{stage}.log:", *tail]) + "\n"


# --- The stages of a call ----------------------------------------------------------------------
def ready(call: Call, stage: gpu_plan.Stage, named: list[str]) -> bool:
  """Whether the stage runs now; where not, says why (and records it where the summary shows it)."""
  name, runs, need = stage.name, call.runs, stage.needs
  if (runs / f"{name}.done").exists():
    call.say(f"{name}: done before, skipped")
    return False
  if (runs / f"{name}.failed").exists():
    if name not in named:
      call.say(f"{name}: failed in an earlier call, not tried again (name it to retry)")
      return False
    (runs / f"{name}.failed").unlink()
  if need and not (runs / need / "trained").exists():
    if (runs / f"{need}.failed").exists():
      call.say(f"{name}: skipped, {need} failed before its training finished")
      call.record(name, "skipped", 0, f"{need} failed before its training finished")
    else:
      call.say(f"{name}: waits for {need}'s training")
      call.record(name, "waiting", 0, f"{need} is not trained yet")
    return False
  if call.remaining() < gpu_plan.LEAST_STAGE_SECONDS:
    call.say(f"{name}: not reached, no time left in this call")
    call.record(name, "not reached", 0, f"no time left in call {call.number}")
    return False
  return True


def run_stage(call: Call, stage: gpu_plan.Stage) -> None:
  """Runs the stage's command; records it done, unfinished, skipped or failed."""
  name = stage.name
  call.say(f"=== stage {name}")
  call.stage, call.stage_log = name, call.runs / "logs" / f"{name}.log"
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
  call.log(f"=== call {call.number}, {now}")
  first = call.stage_log.stat().st_size
  begin = time.time()
  try:
    stage.command(call, stage)
  except Unfinished:
    call.record(name, "unfinished", int(time.time() - begin),
                f"stopped at the end of call {call.number}; the next call goes on")
    call.say(f"{name}: unfinished, the next call goes on")
  except Skipped as skipped:
    call.record(name, "skipped", int(time.time() - begin), str(skipped))
    call.say(f"{name}: skipped in this call")
  except Exception as error:  # pylint: disable=broad-except  # a fault here fails this stage only
    if not isinstance(error, Failed):
      call.note(traceback.format_exc().rstrip())
    record_failure(call, stage, int(time.time() - begin), first)
  else:
    (call.runs / f"{name}.done").touch()
    call.record(name, "done", int(time.time() - begin), "")
    call.say(f"{name}: done in {int(time.time() - begin)} s")
  call.stage, call.stage_log = "", None


def record_failure(call: Call, stage: gpu_plan.Stage, seconds: int, first: int) -> None:
  """RUNS/STAGE.failed from this attempt's lines of the stage's log; the call goes on."""
  with open(call.stage_log, "rb") as log:
    log.seek(first)
    attempt = log.read().decode("utf-8", errors="replace").splitlines()
  failure = failure_record(stage.name, attempt)
  (call.runs / f"{stage.name}.failed").write_text(failure, encoding="utf-8")
  call.record(stage.name, "failed", seconds, failure.splitlines()[0])
  call.failed.append(stage.name)
  call.say(f"{stage.name}: FAILED after {seconds} s; the call goes on")


def run_stages(call: Call, stages: list[gpu_plan.Stage], order: list[str], named: list[str]
               ) -> None:
  """The stages of `order` that are ready, one after the other."""
  by_name = {stage.name: stage for stage in stages}
  for name in order:
    if ready(call, by_name[name], named):
      run_stage(call, by_name[name])


# --- Set-up: carried wheels, versions, device ------------------------------------------------
MISSING = ("import importlib.util; print(' '.join(name for name in ('ml_collections', "
           "'tensorboardX') if importlib.util.find_spec(name) is None))")
VERSIONS = """import platform
import jax, flax, optax, orbax.checkpoint, ml_collections, tensorboardX
print(f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
      f"optax {optax.__version__}, orbax-checkpoint {orbax.checkpoint.__version__}; "
      f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})")
"""


def quiet(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
  """Runs a short command; its errors are printed (so logged), its output returned."""
  result = subprocess.run(command, capture_output=True, text=True, env=env, check=False,
                          stdin=subprocess.DEVNULL)
  if result.stderr:
    print(result.stderr, end="")
  return result


def add_site(call: Call, site: pathlib.Path) -> None:
  """Puts the folder of installed wheels first on the commands' PYTHONPATH."""
  paths = call.env.get("PYTHONPATH", "").split(os.pathsep) if call.env.get("PYTHONPATH") else []
  if str(site) not in paths:
    call.env["PYTHONPATH"] = os.pathsep.join([str(site), *paths])


def install_wheels(call: Call) -> bool:
  """Installs the wheels carried in .whl/ for the packages python3 lacks."""
  site = call.runs.resolve() / "site"
  if site.is_dir():  # an earlier call of this lease installed them
    add_site(call, site)
  checked = quiet([call.python, "-c", MISSING], call.env)
  missing = checked.stdout.strip()
  if checked.returncode or not missing:
    return checked.returncode == 0
  wheels = sorted(str(path) for path in pathlib.Path(".whl").glob("*.whl"))
  if not wheels:
    print(f"error: python3 lacks {missing} and no wheels are carried in .whl/")
    return False
  call.say(f"installing carried wheels for: {missing}")
  installed = quiet([call.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                     "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site),
                     *wheels], call.env)
  print(installed.stdout, end="")
  if installed.returncode:
    print("error: installing .whl/*.whl failed")
    return False
  add_site(call, site)
  return True


def setup(call: Call) -> bool:
  """Wheels, then versions and devices (RUNS/environment.txt); False where polyflax cannot run."""
  if not install_wheels(call):
    return False
  versions = quiet([call.python, "-c", VERSIONS], call.env)
  (call.runs / "environment.txt").write_text(versions.stdout, encoding="utf-8")
  print(versions.stdout, end="")
  if versions.returncode:
    print("error: the Python environment cannot run polyflax")
    return False
  if shutil.which("nvidia-smi"):
    print(quiet(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                 "--format=csv,noheader"], call.env).stdout, end="")
  return True


# --- The end of a call: summary and files ----------------------------------------------------
RUN_FILES = ("events.out.tfevents.*", "metrics.json", "config.json", "trained")
RUNS_FILES = ("*.calls", "*.max_steps", "*.done", "*.failed", "stages.tsv", "calls_made",
              "environment.txt", "summary.json", "bench/*.json", "logs/*.log")


def summarize(call: Call, order: list[str]) -> str:
  """OUT/summary.md by scripts/summarize_runs.py, or the stage ledger where that fails."""
  summary = quiet([call.python, "scripts/summarize_runs.py", str(call.runs), "--stages",
                   " ".join(order), "--call", str(call.number), "--json",
                   str(call.runs / "summary.json")], call.env)
  text = summary.stdout
  if summary.returncode:
    print("warning: scripts/summarize_runs.py failed; the stage ledger instead")
    ledger = call.runs / "stages.tsv"
    rows = ledger.read_text(encoding="utf-8").splitlines() if ledger.exists() else []
    text = "\n".join(["| call | stage | status | seconds | note |",
                      "| --- | --- | --- | --- | --- |",
                      *("| " + row.replace("\t", " | ") + " |" for row in rows)]) + "\n"
  (call.out / "summary.md").write_text(text, encoding="utf-8")
  return text


def results_files(runs: pathlib.Path, run_names: list[str]) -> list[str]:
  """The files of results.tar.gz, relative to `runs`."""
  names = []
  for run in run_names:
    for path in sorted((runs / run).rglob("*")):
      depth = len(path.relative_to(runs / run).parts)
      if depth <= 3 and any(path.match(pattern) for pattern in RUN_FILES):
        names.append(str(path.relative_to(runs)))
  for pattern in RUNS_FILES:
    names += sorted(str(path.relative_to(runs)) for path in runs.glob(pattern))
  return names


def pack(call: Call, stages: list) -> None:
  """results.tar.gz, then the file each stage ships; warns of files too large to come back."""
  names = results_files(call.runs, ["smoke", "red", "orange", "best"])
  if names:
    with tarfile.open(call.out / "results.tar.gz", "w:gz") as packed:
      for name in names:
        packed.add(call.runs / name, arcname=name)
  for stage in stages:
    if stage.ships:
      stage.ships.make(call, stage)
  for path in sorted(call.out.iterdir()):
    if path.is_file() and path.stat().st_size > MOST_OUTPUT_BYTES:
      print(f"warning: {path} is over 16 MiB and may not come back")


def finish(call: Call, stages: list, order: list[str]) -> int:
  """The summary, the files, what is left; the exit status (1 where a stage failed in the call)."""
  call.say("summary")
  text = summarize(call, order)
  pack(call, stages)
  left = [stage.name for stage in stages if not (call.runs / f"{stage.name}.done").exists()]
  print(f"\n{text}")
  print(f"stages not done: {' '.join(left)}" if left else "all stages done")
  print(f"call {call.number} ended after {int(time.time() - call.started)} s of its "
        f"{call.budget} s")
  if call.failed:
    print(f"failed in this call: {' '.join(call.failed)}")
  return 1 if call.failed else 0
