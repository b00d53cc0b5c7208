"""Python subprocesses of the tests, forked from a server that has imported jax once.

A test that starts `python main.py ...` (or another script that imports jax)
would pay for importing jax, flax, optax and Orbax in every process before the
script does anything (docs/testing.md says how much). Instead one server
process per test session (conftest.py) imports them once, and each such
command is a fork of it that then runs the script as a fresh interpreter
would: its argv, working folder, environment, standard streams, signal
handlers and exit status, atexit handlers included. The server never starts
jax's backend, so a child still reads XLA_FLAGS (device counts) when it first
uses jax.

`Popen` and `run` take subprocess's arguments, those the tests use. A command
goes to the server only if it is `sys.executable` running a script or a `-m`
module, with the same values as the tests' process for what Python, jax and
the allocator read as a process starts (PYTHON*, JAX_*, LD_PRELOAD,
POLYFLAX_TCMALLOC). Any other command, or any command without a server
(POLYFLAX_TEST_FORK_SERVER unset), is an ordinary subprocess. The tests that
check how a process starts (the allocator's re-execution, which modules a
command imports) call subprocess itself.

The server runs under tcmalloc where the `polyflax` command would: its
children are the command's re-executed process (polyflax/allocator.py).

Scripts the tests run that start Python commands of their own (the GPU
plan's rehearsal, the lever comparison) take their interpreter from the
PYTHON variable: `interpreter()` is an executable that stands for Python and
asks the server for each command it may fork (`client`), and runs any other
as Python itself. It passes on the signals it gets, and a client that dies
(killed outright) takes its forked command with it.
"""

import io
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

# The server's socket, set by conftest.py for the session and its subprocesses.
SERVER_VARIABLE = "POLYFLAX_TEST_FORK_SERVER"
# Beside the socket: the start values of the environment the server was
# started from (`write_start_values`), and the executable `interpreter()`.
START_VALUES_SUFFIX = ".start.json"
INTERPRETER_SUFFIX = ".python"
# PYTHON names an interpreter to the scripts; Python itself never reads it.
# A child emulates PYTHONUNBUFFERED (`_open_streams`).
_NOT_START_VALUES = {"PYTHON", "PYTHONUNBUFFERED"}
# What a client passes on to its forked command.
_PASSED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2)


def _start_values(env):
  """What Python, jax and the allocator read of `env` when a process starts.

  A command whose values differ from the server's needs a process of its own.
  """
  from polyflax import allocator  # pylint: disable=g-import-not-at-top  (never in the server)
  prefixes = ("JAX_", "PYTHON", "LD_PRELOAD", allocator.SWITCH_VARIABLE)
  return {name: value for name, value in env.items()
          if name.startswith(prefixes) and name not in _NOT_START_VALUES}


def _without_kept(values, kept):
  """`values` less the variables that have the value the server keeps for its children."""
  return {name: value for name, value in values.items() if kept.get(name) != value}


def write_start_values(path: str, env, server_env, kept_names) -> None:
  """Records, beside the server's socket `path`, the start values of the tests'
  environment `env`, and of the variables `kept_names` of the server's
  environment `server_env` (the allocator's), which its children keep
  (`serve`) and pass on to the commands they start."""
  kept = {name: server_env[name] for name in kept_names if name in server_env}
  with open(path + START_VALUES_SUFFIX, "w", encoding="utf-8") as f:
    json.dump({"start": _without_kept(_start_values(env), kept), "kept": kept}, f)


def write_interpreter(path: str) -> str:
  """Writes the executable `interpreter()` names, beside the server's socket `path`."""
  executable = path + INTERPRETER_SUFFIX
  with open(executable, "w", encoding="utf-8") as f:
    f.write(f"#!/bin/sh\nexec '{sys.executable}' '{os.path.abspath(__file__)}' --client \"$@\"\n")
  os.chmod(executable, 0o755)
  return executable


def interpreter() -> str:
  """An executable that runs as Python would, forking what it can from the server.

  sys.executable where no server runs. Give it to scripts as PYTHON.
  """
  path = os.environ.get(SERVER_VARIABLE)
  return path + INTERPRETER_SUFFIX if path else sys.executable


# --- The server ---------------------------------------------------------------------------


def _open_streams(unbuffered: bool) -> None:
  """The streams a fresh interpreter opens on descriptors 0, 1 and 2.

  Standard output is line-buffered only on a terminal, standard error always;
  with PYTHONUNBUFFERED both write through at once.
  """
  sys.stdin = open(0, "r", closefd=False, encoding=sys.stdin.encoding)  # pylint: disable=consider-using-with
  for number, name in ((1, "stdout"), (2, "stderr")):
    errors = "backslashreplace" if number == 2 else "strict"
    if unbuffered:
      stream = io.TextIOWrapper(open(number, "wb", buffering=0, closefd=False),  # pylint: disable=consider-using-with
                                encoding=getattr(sys, name).encoding, errors=errors,
                                write_through=True)
    else:
      stream = open(number, "w", closefd=False, encoding=getattr(sys, name).encoding,  # pylint: disable=consider-using-with
                    errors=errors, buffering=1 if number == 2 or os.isatty(1) else -1)
    setattr(sys, name, stream)


def _run_child(request, kept_names):
  """In the forked child: becomes the requested command; never returns.

  `kept_names`: the variables of the server's environment the child keeps
  over the request's (the allocator's, see `serve`).
  """
  code = 1
  try:
    os.chdir(request["cwd"])
    kept = {name: os.environ[name] for name in kept_names if name in os.environ}
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(kept)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
      signal.signal(number, signal.default_int_handler if number == signal.SIGINT
                    else signal.SIG_IGN if number == signal.SIGPIPE else signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    _open_streams(bool(request["env"].get("PYTHONUNBUFFERED")))
    import runpy  # pylint: disable=g-import-not-at-top
    args = request["args"]
    try:
      sys.orig_argv = [sys.executable, *args]
      if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
      else:
        sys.argv = list(args)
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")
      code = 0
    except SystemExit as exit_:
      if exit_.code is None or isinstance(exit_.code, int):
        code = exit_.code or 0
      else:
        print(exit_.code, file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # pylint: disable=broad-except
      import traceback  # pylint: disable=g-import-not-at-top
      traceback.print_exc()
      code = 1
    # Python's own exit, in its order: wait for the threads that are not
    # daemons, after threading's exit callbacks (concurrent.futures stops its
    # process pools there), then the atexit functions (multiprocessing joins
    # its children there). Without the first, a pool's worker was never told
    # to stop and its command waited for it forever.
    import atexit  # pylint: disable=g-import-not-at-top
    import threading  # pylint: disable=g-import-not-at-top
    threading._shutdown()  # pylint: disable=protected-access
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
  except BaseException:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()  # the child failed before it ran the command
  finally:
    os._exit(code)  # pylint: disable=protected-access


def serve(path: str, kept_names: list[str]) -> None:
  """Imports the libraries once, then forks a child for each request on the socket `path`.

  It imports no polyflax module: a child imports the one beside its script,
  as a fresh interpreter would. `kept_names`: the variables of the server's
  environment each child keeps, those that say which allocator the server
  runs under (as polyflax/allocator.py's re-execution sets them, so that a
  child does not start again).
  """
  import flax.nnx  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import jax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import optax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import orbax.checkpoint  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorboardX  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  # Python 3.12 warns at each fork of a process with more than one thread.
  # The server's only other thread is a native one that numpy's BLAS starts
  # at import, and BLAS re-creates its threads in a forked child.
  warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                          category=DeprecationWarning)
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(path)
  listener.listen(64)
  wake_read, wake_write = os.pipe()
  os.set_blocking(wake_write, False)
  signal.set_wakeup_fd(wake_write)
  signal.signal(signal.SIGCHLD, lambda *_: None)
  selector = selectors.DefaultSelector()
  selector.register(listener, selectors.EVENT_READ)
  selector.register(wake_read, selectors.EVENT_READ)
  children = {}  # {pid: the connection its client waits on}
  parent = os.getppid()
  print("ready", flush=True)
  while os.getppid() == parent:  # a session killed outright leaves no server behind
    for key, _ in selector.select(timeout=5):
      if isinstance(key.data, int):  # a client's connection: it sends nothing, so it ended
        selector.unregister(key.fileobj)
        try:
          os.kill(key.data, signal.SIGKILL)  # the client was killed outright: so is its child
        except ProcessLookupError:
          pass
      elif key.fileobj is listener:
        connection, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
          selector.close()
          listener.close()
          for other in [connection, *children.values()]:
            other.close()
          for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
          _run_child(request, kept_names)
        for fd in fds:
          os.close(fd)
        connection.sendall(f"{pid}\n".encode())
        children[pid] = connection
        selector.register(connection, selectors.EVENT_READ, pid)
      else:
        os.read(wake_read, 4096)
    while children:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if pid == 0:
        break
      connection = children.pop(pid, None)
      if connection is not None:
        if connection.fileno() in selector.get_map():
          selector.unregister(connection)
        try:
          connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
          pass
        connection.close()


# --- The client ----------------------------------------------------------------------------


def _server_for(args, env):
  """The server's socket if `args` with `env` may be forked from it, else None."""
  path = os.environ.get(SERVER_VARIABLE)
  if not path or not args or args[0] != sys.executable or len(args) < 2:
    return None
  if args[1].startswith("-") and args[1] != "-m":
    return None
  with open(path + START_VALUES_SUFFIX, encoding="utf-8") as f:
    recorded = json.load(f)
  if _without_kept(_start_values(env), recorded["kept"]) != recorded["start"]:
    return None
  return path


class _Forked:
  """What the tests use of subprocess.Popen, for a child of the fork server."""

  def __init__(self, path, args, env, cwd, stdin, stdout, stderr, text):
    self.args = args
    self.returncode = None
    self.stdin = self.stdout = self.stderr = None
    ends, close_here = [], []
    for number, spec in enumerate((stdin, stdout, stderr)):
      if spec == subprocess.PIPE:
        read, write = os.pipe()
        child_end, own_end = (read, write) if number == 0 else (write, read)
        mode = ("w" if number == 0 else "r") + ("" if text else "b")
        setattr(self, ("stdin", "stdout", "stderr")[number], os.fdopen(own_end, mode))
        ends.append(child_end)
        close_here.append(child_end)
      elif spec == subprocess.STDOUT:
        ends.append(None)
      elif spec == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        ends.append(fd)
        close_here.append(fd)
      elif spec is None:
        ends.append(number)
      else:
        ends.append(spec if isinstance(spec, int) else spec.fileno())
    if ends[2] is None:
      ends[2] = ends[1]
    request = json.dumps({"args": list(args[1:]), "env": dict(env), "cwd": str(cwd)})
    self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    self._connection.connect(path)
    socket.send_fds(self._connection, [request.encode()], ends)
    for fd in close_here:
      os.close(fd)
    self._received = b""
    self.pid = int(self._line(None))

  def _line(self, timeout):
    """The server's next line; None if none came within `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while b"\n" not in self._received:
      left = None if deadline is None else max(0.0, deadline - time.monotonic())
      if not select.select([self._connection], [], [], left)[0]:
        return None
      chunk = self._connection.recv(64)
      if not chunk:
        raise RuntimeError(f"the fork server closed the connection of {self.args}")
      self._received += chunk
    line, self._received = self._received.split(b"\n", 1)
    return line.decode()

  def _status(self, timeout):
    if self.returncode is None:
      line = self._line(timeout)
      if line is not None:
        self.returncode = int(line)
        self._connection.close()
    return self.returncode

  def poll(self):
    return self._status(0)

  def wait(self, timeout=None):
    if self._status(timeout) is None:
      raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def send_signal(self, number):
    if self.poll() is None:
      os.kill(self.pid, number)

  def terminate(self):
    self.send_signal(signal.SIGTERM)

  def kill(self):
    self.send_signal(signal.SIGKILL)

  def communicate(self, input=None, timeout=None):  # pylint: disable=redefined-builtin
    """Writes `input`, reads the pipes to their end and waits, as Popen's does.

    The pipes are read while `input` is written, so a child that answers as it
    reads never blocks on a full pipe.
    """
    outputs = [None, None]
    readers = [threading.Thread(target=lambda i=i, stream=stream: outputs.__setitem__(
        i, stream.read()), daemon=True)
               for i, stream in enumerate((self.stdout, self.stderr)) if stream is not None]
    for reader in readers:
      reader.start()
    if self.stdin is not None:
      try:
        if input:
          self.stdin.write(input)
        self.stdin.close()
      except BrokenPipeError:  # the child ended without reading it all, as Popen allows
        pass
    self.wait(timeout)
    for reader in readers:
      reader.join()
    for stream in (self.stdout, self.stderr):
      if stream is not None:
        stream.close()
    return tuple(outputs)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    for stream in (self.stdout, self.stderr, self.stdin):
      if stream is not None:
        stream.close()
    self.wait()


def Popen(args, *, env=None, cwd=None, stdin=None, stdout=None, stderr=None, text=False,
          **kwargs):  # pylint: disable=invalid-name
  """subprocess.Popen, forked from the server where the command allows (see the docstring)."""
  args = [str(arg) for arg in args]
  path = None if kwargs else _server_for(args, os.environ if env is None else env)
  if path is None:
    return subprocess.Popen(args, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                            text=text, **kwargs)
  return _Forked(path, args, os.environ if env is None else env, cwd or os.getcwd(), stdin,
                 stdout, stderr, text)


def run(args, *, input=None, capture_output=False, timeout=None, check=False, **kwargs):  # pylint: disable=redefined-builtin
  """subprocess.run, forked from the server where the command allows."""
  if capture_output:
    kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
  if input is not None:
    kwargs["stdin"] = subprocess.PIPE
  process = Popen(args, **kwargs)
  try:
    out, err = process.communicate(input, timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    raise
  result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
  if check:
    result.check_returncode()
  return result


def client(args: list[str]) -> None:
  """Runs `python ARGS` as `interpreter()`: forked where it may be, else Python itself.

  The signals in _PASSED_SIGNALS go on to the forked command; its exit status,
  death by a signal included, is this process's.
  """
  if _server_for([sys.executable, *args], os.environ) is None:
    os.execv(sys.executable, [sys.executable, *args])
  process = Popen([sys.executable, *args], stdin=0, stdout=1, stderr=2)

  def pass_on(number, _):
    try:
      os.kill(process.pid, number)
    except ProcessLookupError:  # it has ended; its status is on the way
      pass

  for number in _PASSED_SIGNALS:
    signal.signal(number, pass_on)
  code = process.wait()
  if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
  sys.exit(code)


if __name__ == "__main__":
  if sys.argv[1:2] == ["--client"]:
    client(sys.argv[2:])
  else:
    serve(sys.argv[1], sys.argv[2:])
