"""A run's input pipeline from its config: text -> tokens -> batches, in one call.

`training_data` builds what a training run reads: its training stream
(`training_streams`: the train split, or lines generated afresh every epoch,
`example_sources`) and its validation batches (`eval_batches`), all cut by
one `bucketing.Batching`, which `batching` makes from the config and the
device mesh. `trained_lines` builds a run's training stream again to ask
which lines it had served at a checkpoint's saved position (evaluation's
seen and unseen lines).

The parts, one job each: `example_sources` (split files, generated lines),
`bucketing` (buckets, batch sizes, layouts, the batch format),
`training_streams` (shuffled, resumable training batches and their state),
`eval_batches` (every example once).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np

from polyflax import bucketing
from polyflax import eval_batches
from polyflax import example_sources
from polyflax import row_mix
from polyflax import training_streams
from polyflax import vocab as vocab_lib


def batching(config, mesh, *, buckets: Sequence[int] | None = None) -> bucketing.Batching:
  """The batching of an experiment config on `mesh`, for this process.

  Args:
    config: the experiment config (`length_buckets`, `constant_per_batch`).
    mesh: the device mesh; global batch sizes are multiples of its size.
    buckets: other bucket lengths than the config's (prediction compiles
      one bucket of max_len).
  """
  import jax  # pylint: disable=g-import-not-at-top  # (the pipeline itself is NumPy only)
  return bucketing.Batching(buckets=tuple(config.length_buckets if buckets is None else buckets),
                            constant=config.constant_per_batch,
                            batch_multiple=int(mesh.devices.size),
                            process_index=jax.process_index(), process_count=jax.process_count())


@dataclasses.dataclass
class TrainingData:
  """What a training run reads: its training stream and its validation split, batched."""
  train: training_streams.TrainingStream
  val: eval_batches.EvalBatches  # every validation example once, for the teacher-forced metrics
  val_src: np.ndarray  # [N, max_len] source ids, row i of `val_pairs`, for exact match
  val_pairs: list[tuple[str, str]]


def training_data(config, split_paths: Mapping[str, str | os.PathLike], vocab: vocab_lib.Vocab,
                  batching: bucketing.Batching) -> TrainingData:
  """Text -> tokens -> batches: a run's training stream and validation batches, from its config.

  `train_data="split"` reads the train split; `"generated"` makes fresh
  lines every epoch (as many as the split holds, unless
  `generated_examples_per_epoch` says otherwise). Validation is always the
  fixed validation split, batched at `eval_batch_size`.

  Raises:
    ValueError: the data cannot make a batch (e.g. fewer examples than one).
    data.DataError: a split file that cannot be read.
  """
  read = lambda name: example_sources.load_split(split_paths[name], vocab, config.max_len,
                                                 skip_bad=config.skip_bad_lines)
  train_src, train_tgt, _ = read("train")
  val_src, val_tgt, val_pairs = read("val")
  if config.train_data == "generated":
    train = _generated_stream(config, vocab, batching,
                              config.generated_examples_per_epoch or len(train_src))
  else:
    train = training_streams.TrainIterator(train_src, train_tgt, batch_size=config.batch_size,
                                           seed=config.seed, batching=batching)
  return TrainingData(train=train,
                      val=eval_batches.EvalBatches(val_src, val_tgt,
                                                   batch_size=config.eval_batch_size,
                                                   batching=batching),
                      val_src=val_src, val_pairs=val_pairs)


def _generated_stream(config, vocab: vocab_lib.Vocab, batching: bucketing.Batching,
                      examples_per_epoch: int, *,
                      in_process: bool = False) -> training_streams.GeneratedTrainIterator:
  """The stream of lines generated from the config's `data_seed`, every epoch afresh."""
  source = example_sources.generated_examples(
      vocab, config.max_len, config.data_seed, examples_per_epoch,
      mix=row_mix.RowMix.from_config(config))
  return training_streams.GeneratedTrainIterator(source, batch_size=config.batch_size,
                                                 seed=config.seed, batching=batching,
                                                 in_process=in_process)


def trained_lines(config, split_paths: Mapping[str, str | os.PathLike], state: Mapping[str, int],
                  *, device_count: int) -> training_streams.TrainedLines:
  """The lines a run of `config` had trained on when its stream saved `state`.

  Builds the run's training stream again, as `training_data` built it (the
  train split of `split_paths`, or the lines generated from `data_seed`), and
  asks it (`TrainingStream.trained_lines`): the lines of every batch served
  before the state, epoch by epoch, every process's rows. `config` must
  hold the run's training fields (train_data, seed, batch_size,
  length_buckets, constant_per_batch and the generated stream's fields);
  `device_count` is the number of devices it trained on, of which every
  batch size is a multiple (its processes, which divide the devices, change
  no batch size).

  Raises:
    FileNotFoundError, data.DataError: the train split cannot be read.
    ValueError: `state` is not of this config's stream (another seed, kind
      of stream, number of examples, or a position past an epoch's end).
  """
  # The digit order changes no length, so no bucket and no order: the printed
  # order, which encodes fastest, serves every run.
  vocab = vocab_lib.Vocab.default()
  # One process holding every row of the run's global batches.
  whole = bucketing.Batching(buckets=tuple(config.length_buckets),
                             constant=config.constant_per_batch, batch_multiple=device_count)
  if config.train_data == "generated":
    # A run of `generated_examples_per_epoch=0` drew as many lines as its split holds, which
    # the state records: the split itself need not be at hand.
    per_epoch = (config.generated_examples_per_epoch
                 or training_streams.saved_examples_per_epoch(state))
    if not per_epoch:
      raise ValueError("the state is of a stream of the train split, the config says "
                       "train_data='generated'")
    stream = _generated_stream(config, vocab, whole, per_epoch, in_process=True)
  else:
    # Malformed lines skipped: a run on this split skipped them, or stopped at the first.
    src, tgt, pairs = example_sources.load_split(
        split_paths["train"], vocab, config.max_len, skip_bad=True)
    stream = training_streams.TrainIterator(
        src, tgt, batch_size=config.batch_size, seed=config.seed, batching=whole,
        lines=[f"{factored}={expanded}" for factored, expanded in pairs])
  try:
    return stream.trained_lines(state)
  finally:
    stream.close()  # `trained_lines` makes its epochs in the calling thread
