"""Validation during training: teacher-forced metrics, and exact match by greedy decoding.

`Validator` scores the run's validation batches with the compiled eval step
and decodes a fixed sample of the validation split greedily with the cached
decoder of `decode.py`, comparing the text with the expected expansion.
"""

from __future__ import annotations

import numpy as np

from polyflax import decode
from polyflax import experiment as experiment_lib
from polyflax import bucketing
from polyflax import input_pipeline
from polyflax import metrics as metrics_lib
from polyflax import sharding
from polyflax import steps


def evaluate_metrics(experiment: experiment_lib.Experiment, params, batches,
                     limit_batches=None) -> dict:
  """Teacher-forced averages over evaluation batches (each example counted once)."""
  total = None
  for index, batch in enumerate(batches):
    if limit_batches is not None and index >= limit_batches:
      break
    total = metrics_lib.add_sums(total, experiment.eval_step(
        params, steps.step_batch(batch, experiment.mesh)))
  return metrics_lib.averages(total) if total is not None else {}


class Validator:
  """Teacher-forced validation metrics, plus exact match by greedy decoding of a fixed sample.

  `max_batches` and `max_decoded` cut validation short (`fast_dev_run`).
  """

  def __init__(self, experiment: experiment_lib.Experiment, data: input_pipeline.TrainingData,
               batching: bucketing.Batching, *, max_batches=None, max_decoded=None):
    config = experiment.config
    self._experiment, self._data, self._max_batches = experiment, data, max_batches
    self._decoder = decode.Decoder(experiment.graphdef, None, experiment.vocab, experiment.mesh,
                                   max_len=config.max_len, batching=batching)
    self._num_decoded = min(config.val_exact_match_examples, len(data.val_pairs),
                            max_decoded if max_decoded is not None else len(data.val_pairs))

  def compile(self, params) -> int:
    """Compiles the eval step and the decoder for every validation batch shape; returns how many."""
    experiment = self._experiment
    num_shapes = sharding.compile_shapes(
        lambda batch: experiment.eval_step(params, steps.step_batch(batch, experiment.mesh)),
        self._data.val.layout.shapes)
    if self._num_decoded:
      self._decoder.warm_up(self._data.val_src[:self._num_decoded],
                            batch_size=experiment.config.eval_batch_size, params=params)
    return num_shapes

  def __call__(self, params) -> dict:
    data = self._data
    result = evaluate_metrics(self._experiment, params, data.val, limit_batches=self._max_batches)
    if self._num_decoded:
      predictions = self._decoder.decode_ids(
          data.val_src[:self._num_decoded], batch_size=self._experiment.config.eval_batch_size,
          params=params)
      result["exact_match"] = float(np.mean(
          [predicted == expanded for predicted, (_, expanded) in zip(predictions, data.val_pairs)]))
    return result
