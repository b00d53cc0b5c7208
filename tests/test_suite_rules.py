"""The test suite's own rules: no test asserts on elapsed time.

Speed depends on the machine and its load, so a timed assertion fails on a
busy machine for no reason and proves nothing on a fast one; speed is
measured in bench/. Hypothesis times every example against a deadline
(200 ms by default), so each property test turns it off.
"""

import ast
import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
TEST_FILES = sorted(TESTS.glob("*.py"))
CLOCKS = {"time", "perf_counter", "monotonic", "process_time", "perf_counter_ns",
          "monotonic_ns", "time_ns"}


def _dotted(node):
  """'a.b.c' of a Name/Attribute chain, or None."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name):
    parts.append(node.id)
    return ".".join(reversed(parts))
  return None


def _reads_a_clock(node, clock_names) -> bool:
  """Whether an expression calls time.<clock>() or uses a name that holds a clock reading."""
  for inner in ast.walk(node):
    called = _dotted(inner.func) if isinstance(inner, ast.Call) else None
    if called and called.startswith("time.") and called.split(".")[-1] in CLOCKS:
      return True
    if isinstance(inner, ast.Name) and inner.id in clock_names:
      return True
  return False


def timed_assertions(source: str) -> list[int]:
  """Line numbers of assert statements that read a clock, directly or through a variable.

  A variable holds a clock reading when its assigned value reads a clock
  (`start = time.perf_counter()`, `elapsed = time.perf_counter() - start`).
  """
  tree = ast.parse(source)
  assignments = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)]
  clock_names = set()
  while True:
    found = {target.id for node in assignments if _reads_a_clock(node.value, clock_names)
             for target in node.targets if isinstance(target, ast.Name)}
    if found <= clock_names:
      break
    clock_names |= found
  return sorted(node.lineno for node in ast.walk(tree)
                if isinstance(node, ast.Assert) and _reads_a_clock(node.test, clock_names))


def property_tests_with_a_deadline(source: str) -> list[str]:
  """Names of hypothesis tests not decorated with `settings(deadline=None)`."""
  names = []
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.FunctionDef):
      continue
    decorators = [d for d in node.decorator_list if isinstance(d, ast.Call)]
    if not any((_dotted(d.func) or "").endswith("given") for d in decorators):
      continue
    deadline_off = any(
        (_dotted(d.func) or "").endswith("settings") and any(
            k.arg == "deadline" and isinstance(k.value, ast.Constant) and k.value.value is None
            for k in d.keywords)
        for d in decorators)
    if not deadline_off:
      names.append(node.name)
  return names


def test_the_checks_recognise_what_they_forbid():
  timed = ("import time\n"
           "def test_fast():\n"
           "  start = time.perf_counter()\n"
           "  assert time.perf_counter() - start < 1.0\n"
           "  elapsed = time.monotonic() - start\n"
           "  assert elapsed < 2.0\n")
  assert timed_assertions(timed) == [4, 6]
  patient = ("import time\n"
             "def test_waits():\n"
             "  deadline = time.monotonic() + 600\n"
             "  while time.monotonic() < deadline:\n"
             "    pass\n"
             "  assert 1 + 1 == 2\n")
  assert timed_assertions(patient) == []
  properties = ("@hypothesis.given(st.text())\n"
                "def test_a(text): pass\n"
                "@hypothesis.settings(max_examples=5, deadline=None)\n"
                "@hypothesis.given(st.text())\n"
                "def test_b(text): pass\n"
                "@settings(deadline=1000)\n"
                "@given(st.text())\n"
                "def test_c(text): pass\n")
  assert property_tests_with_a_deadline(properties) == ["test_a", "test_c"]


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.name)
def test_no_assertion_on_elapsed_time(path):
  assert timed_assertions(path.read_text(encoding="utf-8")) == [], (
      f"{path.name}: assertions on elapsed time (speed belongs in bench/)")


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.name)
def test_property_tests_have_no_deadline(path):
  assert property_tests_with_a_deadline(path.read_text(encoding="utf-8")) == [], (
      f"{path.name}: add @hypothesis.settings(deadline=None)")
