"""Tests of a run's input pipeline built from its config, and of the lines it had trained on."""

import collections

import pytest

from polyflax import config_files
from polyflax import data as data_lib
from polyflax import eval_batches
from polyflax import example_sources
from polyflax import generate
from polyflax import input_pipeline
from polyflax import training_streams
from polyflax.bucketing import Batching
from polyflax.vocab import Vocab


def test_batching_of_a_config_takes_its_buckets_constant_and_the_mesh():
  import jax  # pylint: disable=g-import-not-at-top
  from polyflax import sharding  # pylint: disable=g-import-not-at-top
  config = config_files.load(config_files.REPO / "configs" / "cpu.py")
  batching = input_pipeline.batching(config, sharding.make_mesh())
  assert batching == Batching(buckets=tuple(config.length_buckets), constant="examples",
                              batch_multiple=jax.device_count(), process_index=0,
                              process_count=1)
  assert input_pipeline.batching(config, sharding.make_mesh(), buckets=(32,)).buckets == (32,)


def _splits(tmp_path):
  """Small train and validation splits of generated lines; their paths."""
  paths = data_lib.split_paths(tmp_path / "inputs")
  paths["train"].parent.mkdir()
  for name, size, seed in (("train", 400, 1), ("val", 100, 2)):
    paths[name].write_text("\n".join(generate.generate_lines(size, seed=seed)) + "\n")
  return paths


def _config(tmp_path, **fields):
  """The tiny config (batches of 64) on the splits of `_splits`, with two buckets."""
  return config_files.tiny(tmp_path / "inputs", length_buckets=(16, 32),
                           constant_per_batch="examples", **fields)


@pytest.mark.parametrize("train_data", ["split", "generated"])
def test_training_data_is_the_configs_stream_and_validation_batches(tmp_path, train_data):
  paths = _splits(tmp_path)
  config = _config(tmp_path, train_data=train_data)
  data = input_pipeline.training_data(config, paths, Vocab.default(), Batching(buckets=(16, 32)))
  kind = (training_streams.GeneratedTrainIterator if train_data == "generated"
          else training_streams.TrainIterator)
  assert isinstance(data.train, kind)
  assert data.train.num_examples == 400  # generated: as many as the split holds
  assert isinstance(data.val, eval_batches.EvalBatches) and data.val.num_examples == 100
  assert len(data.val_pairs) == len(data.val_src) == 100
  data.train.close()


@pytest.mark.parametrize("train_data, digit_order", [("split", "printed"),
                                                     ("generated", "printed"),
                                                     ("split", "reversed")])
def test_a_runs_trained_lines_are_those_its_stream_served(tmp_path, train_data, digit_order):
  paths = _splits(tmp_path)
  config = _config(tmp_path, train_data=train_data, generated_examples_per_epoch=300,
                   digit_order=digit_order)
  batching = Batching(buckets=(16, 32), constant="examples")
  stream = input_pipeline.training_data(config, paths, Vocab.default(digit_order), batching).train
  split_lines = ["=".join(pair) for pair in data_lib.read_pairs(paths["train"]).pairs]

  generated = {}  # {epoch: its lines}, made once

  def line_of_row(epoch, row):
    if train_data == "split":
      return split_lines[row]
    # An epoch short of full batches takes more chunks: row r is line r of them, in order.
    if epoch not in generated:
      generated[epoch] = [line for chunk in range(4)
                          for line in example_sources.generated_lines(config.data_seed, 300,
                                                                      epoch, chunk)]
    return generated[epoch][row]

  served = collections.defaultdict(list)
  for _ in range(stream.steps_per_epoch + 2):  # into the second epoch
    epoch, batch = stream.epoch, next(stream)
    served[epoch].extend(line_of_row(epoch, int(row)) for row in batch["index"] if row >= 0)
  state = stream.get_state()
  stream.close()
  trained = input_pipeline.trained_lines(config, paths, state, device_count=1)
  assert [collections.Counter(lines) for lines in trained] == [
      collections.Counter(served[0]), collections.Counter(served[1])]


def test_a_generated_run_of_the_splits_size_is_answered_without_the_split(tmp_path):
  config = _config(tmp_path, train_data="generated")  # generated_examples_per_epoch=0
  paths = data_lib.split_paths(tmp_path / "missing")
  state = {"seed": 0, "epoch": 1, "position": 0, "generated_per_epoch": 300}
  (epoch,) = input_pipeline.trained_lines(config, paths, state, device_count=1)
  assert len(epoch) % 64 == 0 and 300 - 2 * 64 < len(epoch) <= 300  # whole batches of 64
  assert set(epoch) <= set(example_sources.generated_lines(0, 300, 0, 0))
  with pytest.raises(ValueError, match="train split"):
    input_pipeline.trained_lines(config, paths, {"seed": 0, "epoch": 1, "position": 0},
                                 device_count=1)
