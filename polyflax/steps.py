"""The training and evaluation steps: pure functions of the `TrainState` and a global batch.

`experiment.build` compiles them with `jax.jit` over the one-axis `data`
mesh (batch sharded, state replicated, the train state donated). Dropout
keys are `fold_in(rng, step)`, so a resumed run draws the same masks.
Metrics come back as sums with their denominators (`metrics.py`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from polyflax import metrics as metrics_lib
from polyflax import sharding

# The arrays of a batch that a step reads (the batch's `index` stays on the host).
STEP_INPUTS = ("inputs", "targets", "example_mask")


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes."""
  step: jax.Array
  params: Any  # nnx.State of the model's nnx.Param variables
  opt_state: Any
  rng: jax.Array  # raw uint32 key; dropout uses fold_in(rng, step)


def step_batch(local_batch: dict, mesh) -> dict:
  """The global, sharded arrays a step reads, from this process's rows of a batch."""
  return sharding.put_batch({name: local_batch[name] for name in STEP_INPUTS}, mesh)


def train_step(state: TrainState, batch, *, graphdef, tx, label_smoothing: float,
               skip_nonfinite: bool = False):
  """One optimizer step on a global batch; returns the new state and metric sums."""
  dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    model = nnx.merge(graphdef, params)
    logits = model(batch["inputs"], batch["targets"], deterministic=False,
                   rngs=nnx.Rngs(dropout=dropout_key))
    return metrics_lib.cross_entropy_sums(logits, batch["targets"], batch["example_mask"],
                                          label_smoothing)

  (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(sums["loss_sum"]) & jnp.isfinite(grad_norm)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if skip_nonfinite:
    # A step with a non-finite loss leaves parameters and optimizer untouched.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    sums = {name: jnp.where(finite, value, 0.0) for name, value in sums.items()}
    grad_norm = jnp.where(finite, grad_norm, 0.0)
  sums = dict(sums, grad_norm=grad_norm, steps=jnp.float32(1), finite=finite.astype(jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums


def eval_step(params, batch, *, graphdef):
  """Teacher-forced metric sums of a batch (no label smoothing)."""
  model = nnx.merge(graphdef, params)
  logits = model(batch["inputs"], batch["targets"], deterministic=True)
  _, sums = metrics_lib.cross_entropy_sums(logits, batch["targets"], batch["example_mask"])
  return sums
