"""Tests of data files: generating, writing, the command line and the splits."""

import json
import os
import pathlib
import stat
import subprocess
import sys

import pytest

from polyflax import data
from polyflax import generate

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
GOOD = ["(21-t)*(-6*t-4)=6*t**2-122*t-84", "5*(27-6*sin(j))*sin(j)=-30*sin(j)**2+135*sin(j)",
        "-7*sin(i)**2=-7*sin(i)**2", "(z+3)**2=z**2+6*z+9"]


def test_check_cli_output_and_exit_code(tmp_path, capsys):
  lines = generate.generate_lines(100, seed=1)
  good = data.write_lines_atomic(tmp_path / "good.txt", lines)
  assert data.main(["check", str(good)]) == 0
  assert capsys.readouterr().out.strip().splitlines() == ["checked 100 lines: 100 valid, 0 invalid"]

  bad_lines = lines[:]
  for i in range(0, 100, 4):  # 25 bad lines: more than the 20 reported.
    bad_lines[i] = "(x+1)*(x+2)=x**2+3*x+3"
  bad = data.write_lines_atomic(tmp_path / "bad.txt", bad_lines)
  assert data.main(["check", str(bad)]) == 1
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == "checked 100 lines: 75 valid, 25 invalid"
  assert out[-2] == "... and 5 more invalid lines"
  assert out[0] == (f"{bad}:1: expanded side 'x**2+3*x+3' is not the expansion of "
                    "'(x+1)*(x+2)' (expected 'x**2+3*x+2')")
  assert len(out) == 22

  binary = tmp_path / "binary.txt"
  binary.write_bytes(b"\x00\x00")
  assert data.main(["check", str(binary)]) == 2
  assert "NUL byte" in capsys.readouterr().err


def test_check_cli_as_a_module(tmp_path):
  path = data.write_lines_atomic(tmp_path / "m.txt", GOOD + ["x=1"])
  process = subprocess.run([sys.executable, "-m", "polyflax.data", "check", str(path)],
                           cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  assert process.returncode == 1
  assert process.stdout.strip().splitlines()[-1] == "checked 5 lines: 4 valid, 1 invalid"
  assert f"{path}:5: factored side 'x' is not a product of two linear factors" in process.stdout


def test_generate_cli_writes_atomically(tmp_path, capsys):
  out = tmp_path / "sub" / "dataset.txt"
  assert data.main(["generate", "--n", "3000", "--seed", "5", "--out", str(out)]) == 0
  assert "wrote 3000 lines" in capsys.readouterr().out
  assert out.read_text(encoding="utf-8").splitlines() == generate.generate_lines(3000, seed=5)
  assert sorted(os.listdir(out.parent)) == ["dataset.txt"]


def test_interrupted_write_leaves_no_partial_file(tmp_path):
  path = data.write_lines_atomic(tmp_path / "d.txt", ["old"])

  def lines():
    yield "new 1"
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    data.write_lines_atomic(path, lines())
  assert path.read_text(encoding="utf-8") == "old\n"
  assert os.listdir(tmp_path) == ["d.txt"]


# ---------------------------------------------------------------------------
# Splits.


def make_source(inputs: pathlib.Path, n: int = 1000, seed: int = 0,
                name: str = "dataset.txt") -> list[str]:
  lines = generate.generate_lines(n, seed=seed)
  data.write_lines_atomic(inputs / name, lines)
  return lines


def read_lines(path: pathlib.Path) -> list[str]:
  return path.read_text(encoding="utf-8").splitlines()


def test_split_counts():
  assert data.split_counts(1_000_000) == {"train": 760_000, "val": 40_000, "test": 200_000}
  assert sum(data.split_counts(1001).values()) == 1001


def test_splits_sizes_disjoint_and_complete(tmp_path):
  source = make_source(tmp_path)
  paths = data.ensure_splits(tmp_path, seed=0)
  splits = {name: read_lines(paths[name]) for name in data.SPLIT_NAMES}
  sizes = {name: len(lines) for name, lines in splits.items()}
  assert sizes == {"train": 760, "val": 40, "test": 200}
  assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(source)
  indices = data.split_indices(len(source), seed=0)
  assert set().union(*map(set, indices.values())) == set(range(len(source)))
  for name in data.SPLIT_NAMES:
    assert splits[name] == [source[i] for i in indices[name]]
  manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
  assert manifest["counts"] == {"train": 760, "val": 40, "test": 200}
  assert manifest["source"] == "dataset.txt" and manifest["seed"] == 0
  assert paths["source"] == tmp_path / "dataset.txt"


def test_splits_are_deterministic(tmp_path):
  for directory in ("one", "two"):
    (tmp_path / directory).mkdir()
    make_source(tmp_path / directory)
    data.ensure_splits(tmp_path / directory, seed=3)
  for name in data.SPLIT_NAMES:
    one, two = (tmp_path / directory / f"{name}_set.txt" for directory in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()
  # Pinned permutation: the same on every machine.
  assert data.split_indices(10, seed=0)["test"].tolist() == [4, 6]


def test_splits_and_generated_source_get_ordinary_permissions(tmp_path):
  previous = os.umask(0o022)
  try:
    paths = data.ensure_splits(tmp_path / "fresh", seed=0, generated_size=300)
  finally:
    os.umask(previous)
  for name in ("source", "train", "val", "test", "manifest"):
    assert stat.S_IMODE(paths[name].stat().st_mode) == 0o644, name


def test_splits_not_rewritten_when_current(tmp_path):
  make_source(tmp_path)
  paths = data.ensure_splits(tmp_path)
  stamps = {name: paths[name].stat().st_mtime_ns for name in (*data.SPLIT_NAMES, "manifest")}
  data.ensure_splits(tmp_path)
  assert {name: paths[name].stat().st_mtime_ns for name in stamps} == stamps


def test_splits_rewritten_when_source_seed_or_outputs_change(tmp_path):
  make_source(tmp_path, seed=0)
  paths = data.ensure_splits(tmp_path)
  first_test = read_lines(paths["test"])
  new_source = make_source(tmp_path, seed=1)
  data.ensure_splits(tmp_path)
  assert read_lines(paths["test"]) != first_test
  assert set(read_lines(paths["test"])) <= set(new_source)
  with_seed_0 = read_lines(paths["test"])
  data.ensure_splits(tmp_path, seed=1)
  assert read_lines(paths["test"]) != with_seed_0
  assert json.loads(paths["manifest"].read_text(encoding="utf-8"))["seed"] == 1
  paths["val"].write_text("damaged\n", encoding="utf-8")
  data.ensure_splits(tmp_path, seed=1)
  assert len(read_lines(paths["val"])) == 40


def test_train_txt_is_preferred_and_dataset_generated_when_missing(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "DATASET_SIZE", 500)
  paths = data.ensure_splits(tmp_path)
  assert read_lines(tmp_path / "dataset.txt") == generate.generate_lines(500, seed=0)
  assert len(read_lines(paths["test"])) == 100
  original = make_source(tmp_path, n=300, seed=8, name="train.txt")
  paths = data.ensure_splits(tmp_path)
  assert paths["source"] == tmp_path / "train.txt"
  assert len(read_lines(paths["test"])) == 60
  assert set(read_lines(paths["train"])) <= set(original)


def test_split_cli(tmp_path, capsys):
  make_source(tmp_path)
  assert data.main(["split", "--inputs", str(tmp_path), "--seed", "2"]) == 0
  out = capsys.readouterr().out
  assert "train 760" in out and "val 40" in out and "test 200" in out
  assert json.loads((tmp_path / "splits.json").read_text(encoding="utf-8"))["seed"] == 2
