"""The partial-products auxiliary task: a*d and b*c of `(a*u+b)*(c*u+d)`, predicted on the side.

The linear coefficient of a product of two binomials is the sum a*d + b*c of
two partial products; a model learns it more easily when it is also taught
to predict those products. With `partial_products_weight > 0` a training run
adds that task (`experiment.build`, `steps.train_step`):

* targets (`batch_targets`), computed on the host from each training batch's
  input tokens: the row's text is read back with the vocabulary (in printed
  digit order whatever the model's), parsed into its factors with
  `algebra.parse_factored` (in printed order, a factor without a constant
  first) and a*d and b*c are written as a sign slot and `digit_slots()`
  digit slots, least significant digit first; a row that does not parse
  (padding included) or whose products do not fit has none (its mask is 0);
* `Head`, a linear layer over the decoder's final hidden states predicting
  every slot of both products as one of `NUM_CLASSES` classes, at every real
  decoder position: the state that writes the linear coefficient sits at a
  different position in each row, so every state is taught the products;
* `loss_sums`, the head's cross-entropy averaged over positions and slots,
  as metric sums (`metrics.py`).

Inference never builds the head: it belongs to the training state, and an
exported model holds the Transformer's parameters only.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyflax import algebra
from polyflax import generate
from polyflax import vocab as vocab_lib

# The two products of each row: a*d, then b*c.
PRODUCTS = 2
# Classes of a slot: the digits 0-9; the sign slot uses 0 (>= 0) and 1 (< 0).
NUM_CLASSES = 10
NEGATIVE = 1
# The arrays a train step reads besides the batch's own, when the task is on.
BATCH_FIELDS = ("partial_products", "partial_products_mask")


def digit_slots(generator_config: generate.GeneratorConfig = generate.DEFAULT_CONFIG) -> int:
  """Digits of the largest |a*d| or |b*c| the data's generator can draw.

  |a| is at most the largest coefficient of the generator's range (or 1, the
  omitted one), |b| the largest constant: 9 * 32 = 288, 3 digits.
  """
  largest_coefficient = max(1, *map(abs, generator_config.coefficient_range))
  largest_constant = max(map(abs, generator_config.constant_range))
  return len(str(largest_coefficient * largest_constant))


def slots_per_product(digits: int) -> int:
  """The sign slot and the digit slots of one product."""
  return 1 + digits


def products(form: algebra.FactoredForm) -> tuple[int, int]:
  """(a*d, b*c) of (a*u+b)*(c*u+d), the factors as `algebra.parse_factored` reads them."""
  (a, b), (c, d) = form.first, form.second
  return a * d, b * c


def encode_product(value: int, digits: int) -> np.ndarray | None:
  """The slots of `value`: its sign, then `digits` digits least significant first.

  For example -126 with 3 digits is [1, 6, 2, 1]. None when |value| needs
  more than `digits` digits.
  """
  magnitude = abs(value)
  if magnitude >= 10**digits:
    return None
  slots = [NEGATIVE if value < 0 else 0]
  for _ in range(digits):
    slots.append(magnitude % 10)
    magnitude //= 10
  return np.asarray(slots, dtype=np.int32)


def text_targets(texts, digits: int) -> tuple[np.ndarray, np.ndarray]:
  """Targets of factored texts: ([N, PRODUCTS, 1 + digits] int32, mask [N] float32).

  A text that is not a product of two linear factors, or whose products need
  more than `digits` digits, has zero targets and mask 0.
  """
  texts = list(texts)
  targets = np.zeros((len(texts), PRODUCTS, slots_per_product(digits)), dtype=np.int32)
  mask = np.zeros((len(texts),), dtype=np.float32)
  for row, text in enumerate(texts):
    try:
      form = algebra.parse_factored(text)
    except ValueError:  # AlgebraError: padding, or not such a product
      continue
    encoded = [encode_product(value, digits) for value in products(form)]
    if any(slots is None for slots in encoded):
      continue
    targets[row] = np.stack(encoded)
    mask[row] = 1.0
  return targets, mask


def batch_targets(inputs: np.ndarray, vocab: vocab_lib.Vocab,
                  digits: int) -> dict[str, np.ndarray]:
  """The `BATCH_FIELDS` of a batch, from its input token ids [B, S] (this process's rows).

  The ids are read back as text with `vocab`, which undoes a reversed digit
  order, so the factors are those printed.
  """
  targets, mask = text_targets(vocab.decode_batch(np.asarray(inputs)), digits)
  return {"partial_products": targets, "partial_products_mask": mask}


def with_targets(local_batch: Mapping[str, np.ndarray], vocab: vocab_lib.Vocab,
                 digits: int) -> dict[str, np.ndarray]:
  """`local_batch` with its `BATCH_FIELDS` added (padding rows masked out)."""
  fields = batch_targets(local_batch["inputs"], vocab, digits)
  fields["partial_products_mask"] = (fields["partial_products_mask"]
                                     * np.asarray(local_batch["example_mask"], np.float32))
  return dict(local_batch, **fields)


# ---------------------------------------------------------------------------
# The head and its loss.


class Head(nnx.Module):
  """A linear layer from a decoder hidden state to the classes of every slot of both products."""

  def __init__(self, hidden_dim: int, digits: int, *, rngs: nnx.Rngs):
    self.slots = slots_per_product(digits)
    self.linear = nnx.Linear(hidden_dim, PRODUCTS * self.slots * NUM_CLASSES,
                             dtype=jnp.float32, rngs=rngs)

  def __call__(self, hidden: jax.Array) -> jax.Array:
    """hidden [B, T, D] -> logits [B, T, PRODUCTS, slots, NUM_CLASSES] float32."""
    logits = self.linear(hidden.astype(jnp.float32))
    return logits.reshape(hidden.shape[:2] + (PRODUCTS, self.slots, NUM_CLASSES))


def create_head(hidden_dim: int, digits: int, seed: int):
  """(graphdef, params) of a fresh `Head`, initialised from `seed`."""
  return nnx.split(Head(hidden_dim, digits, rngs=nnx.Rngs(params=seed)), nnx.Param)


def loss_sums(logits: jax.Array, targets: jax.Array, row_mask: jax.Array,
              position_mask: jax.Array):
  """The head's cross-entropy and slot accuracy as sums.

  Args:
    logits: [B, T, PRODUCTS, slots, NUM_CLASSES] from `Head`.
    targets: [B, PRODUCTS, slots] int, from `batch_targets`.
    row_mask: [B], 1 for rows with targets.
    position_mask: [B, T], 1 for the real decoder positions.
  Returns:
    (mean loss over every (position, slot) counted, dict of float32 sums).
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.sum(log_probs * jax.nn.one_hot(targets, NUM_CLASSES)[:, None], axis=-1)
  correct = (jnp.argmax(logits, axis=-1) == targets[:, None]).astype(jnp.float32)
  weights = position_mask.astype(jnp.float32) * row_mask.astype(jnp.float32)[:, None]
  slots = targets.shape[1] * targets.shape[2]
  sums = {
      "partial_products_loss_sum": -jnp.sum(picked.sum(axis=(2, 3)) * weights),
      "partial_products_correct": jnp.sum(correct.sum(axis=(2, 3)) * weights),
      "partial_products_slots": jnp.sum(weights) * slots,
  }
  mean_loss = sums["partial_products_loss_sum"] / jnp.maximum(sums["partial_products_slots"], 1.0)
  return mean_loss, sums
