"""Validation during training: when it happens, teacher-forced metrics, and exact match.

`ValidationSchedule` is the one place that decides which steps validate
(and save the checkpoint that follows): every `val_check_interval` of an
epoch and the last step, plus, early in a run, every
`val_early_every_examples` training examples.

`Validator` scores the run's validation batches with the compiled eval step
and decodes a fixed sample of the validation split greedily with the cached
decoder of `decode.py`, comparing the text with the expected expansion.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from polyflax import decode
from polyflax import experiment as experiment_lib
from polyflax import bucketing
from polyflax import input_pipeline
from polyflax import metrics as metrics_lib
from polyflax import sharding
from polyflax import steps


@dataclasses.dataclass(frozen=True)
class ValidationSchedule:
  """The steps a run validates at: a function of the step and the training examples only.

  Every `every_steps` steps and at `total_steps`; besides, while the run
  has seen at most `early_until_examples` training examples, at the first
  step whose count reaches each multiple of `early_every_examples` (0: no
  early validations). Counting examples, not steps, the early points are
  the same whatever the batch size, and exact: a step validates when its
  batch takes the count from below a multiple to it or past it. The count
  is resumed with the run, so a resumed run validates where an
  uninterrupted one would; a run whose count is unknown (None: resumed from
  a checkpoint written before examples were counted) keeps the step
  schedule only.
  """
  every_steps: int
  total_steps: int
  early_every_examples: int = 0
  early_until_examples: int = 0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *, steps_per_epoch: int,
                  total_steps: int) -> "ValidationSchedule":
    """The schedule of `config`: `val_check_interval` and the `val_early_*` fields."""
    return cls(every_steps=max(1, int(round(config.val_check_interval * steps_per_epoch))),
               total_steps=total_steps,
               early_every_examples=config.val_early_every_examples,
               early_until_examples=config.val_early_until_examples)

  def due(self, step: int, examples_before: int | None, examples_after: int | None) -> bool:
    """Whether `step` validates.

    Its batch took the run's training examples from `examples_before` to
    `examples_after` (None: unknown).
    """
    if step % self.every_steps == 0 or step == self.total_steps:
      return True
    if not self.early_every_examples or examples_before is None or examples_after is None:
      return False
    # The multiples of early_every_examples up to early_until_examples reached by this step.
    reached = min(examples_after, self.early_until_examples) // self.early_every_examples
    return reached > examples_before // self.early_every_examples


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
