"""Loss and metrics as sums with their denominators.

Every metric is returned as a sum over the batch together with the count it
must be divided by, so averages stay exact across batches, devices and hosts:
add the sums, add the counts, divide once at the end.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from polyflax.vocab import PAD_ID

# Each averaged metric: (numerator sum, denominator sum).
AVERAGES = {
    "loss": ("loss_sum", "token_count"),
    "token_accuracy": ("token_correct", "token_count"),
    "sequence_accuracy": ("sequence_correct", "sequence_count"),
    # The partial-products head's (training with partial_products_weight > 0), per slot.
    "partial_products_loss": ("partial_products_loss_sum", "partial_products_slots"),
    "partial_products_accuracy": ("partial_products_correct", "partial_products_slots"),
}


def cross_entropy_sums(logits: jax.Array, targets: jax.Array, example_mask: jax.Array,
                       label_smoothing: float = 0.0):
  """Teacher-forced loss and accuracy sums.

  Args:
    logits: [B, T, V] (any float dtype; computed in float32).
    targets: [B, T] int, PAD_ID = padding.
    example_mask: [B], 1 for real examples, 0 for padding rows.
    label_smoothing: mass spread evenly over the other V - 1 tokens.
  Returns:
    (mean loss over real tokens, dict of float32 sums).
  """
  logits = logits.astype(jnp.float32)
  vocab_size = logits.shape[-1]
  weights = (targets != PAD_ID).astype(jnp.float32) * example_mask.astype(jnp.float32)[:, None]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab_size - 1)
  soft_targets = jax.nn.one_hot(targets, vocab_size) * (confidence - low) + low
  # Subtracting the entropy of the smoothed targets makes a perfect model score 0.
  floor = -(confidence * np.log(confidence) + (vocab_size - 1) * low * np.log(low + 1e-20))
  token_loss = -jnp.sum(soft_targets * log_probs, axis=-1) - floor
  token_correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  sequence_correct = jnp.all((token_correct > 0) | (weights == 0), axis=-1)
  sums = {
      "loss_sum": jnp.sum(token_loss * weights),
      "token_count": jnp.sum(weights),
      "token_correct": jnp.sum(token_correct * weights),
      "sequence_correct": jnp.sum(sequence_correct * example_mask.astype(jnp.float32)),
      "sequence_count": jnp.sum(example_mask.astype(jnp.float32)),
  }
  mean_loss = sums["loss_sum"] / jnp.maximum(sums["token_count"], 1.0)
  return mean_loss, sums


def add_sums(total: Mapping[str, float] | None, sums: Mapping[str, float]) -> dict:
  """Adds two dicts of sums (host or device values)."""
  if total is None:
    return dict(sums)
  return {name: total[name] + sums[name] for name in sums}


def averages(sums: Mapping[str, float]) -> dict[str, float]:
  """Divides each sum by its denominator; other entries pass through as floats."""
  sums = {name: float(value) for name, value in jax.device_get(dict(sums)).items()}
  result = {}
  for name, (numerator, denominator) in AVERAGES.items():
    if numerator in sums and denominator in sums:
      result[name] = sums[numerator] / max(sums[denominator], 1e-9)
  return result
