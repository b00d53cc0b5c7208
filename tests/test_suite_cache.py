"""tests/suite_cache.py: where the tests' compilation cache is kept, and how it is pruned."""

import os

import suite_cache
from polyflax import compile_cache


def test_the_folder_sits_beside_the_programs_own_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert suite_cache.folder() == str(tmp_path / "xdg" / "polyflax" / "tests-jax")
  assert os.path.dirname(suite_cache.folder()) == os.path.dirname(
      compile_cache.default_directory())
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert suite_cache.folder() == str(tmp_path / "home" / ".cache" / "polyflax" / "tests-jax")
  assert os.path.dirname(suite_cache.folder()) == os.path.dirname(
      compile_cache.default_directory())


def _entries(folder, sizes_and_last_use):
  """Files `entry_<i>` of the given sizes, each last used (read or written) at the given time."""
  for number, (size, last_use) in enumerate(sizes_and_last_use):
    path = folder / f"entry_{number}"
    path.write_bytes(b"x" * size)
    os.utime(path, (last_use, last_use))


def test_prune_keeps_a_folder_under_its_limit_as_it_is(tmp_path):
  _entries(tmp_path, [(300, 1000), (300, 2000), (400, 3000)])
  assert suite_cache.prune(str(tmp_path), max_bytes=1000, pruned_bytes=500) == 0
  assert sorted(os.listdir(tmp_path)) == ["entry_0", "entry_1", "entry_2"]


def test_prune_removes_the_least_recently_used_entries_down_to_its_floor(tmp_path):
  # 1,300 bytes, over the 1,000 allowed: the oldest go until at most 500 are left.
  _entries(tmp_path, [(300, 4000), (300, 1000), (300, 2000), (400, 3000)])
  assert suite_cache.prune(str(tmp_path), max_bytes=1000, pruned_bytes=500) == 3
  assert os.listdir(tmp_path) == ["entry_0"]


def test_an_entry_read_lately_counts_as_used_though_written_long_ago(tmp_path):
  _entries(tmp_path, [(600, 1000), (600, 2000)])
  os.utime(tmp_path / "entry_0", (5000, 1000))  # read at 5000, written at 1000
  assert suite_cache.prune(str(tmp_path), max_bytes=1000, pruned_bytes=600) == 1
  assert os.listdir(tmp_path) == ["entry_0"]
