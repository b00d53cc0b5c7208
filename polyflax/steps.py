"""The training and evaluation steps: pure functions of the `TrainState` and a global batch.

`experiment.build` compiles them with `jax.jit` over the one-axis `data`
mesh (batch sharded, state replicated, the train state donated). Dropout
keys are `fold_in(rng, step)`, so a resumed run draws the same masks.
Metrics come back as sums with their denominators (`metrics.py`).

With `ema_decay > 0` the state also carries `ema_params`, a float32
exponential moving average of the parameters updated by every step; it is
then what the run validates, keeps as its best checkpoint and exports
(`TrainState.model_params`).
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
  # float32 moving average of `params` (config.ema_decay > 0); None when off,
  # so the state and its checkpoints are those of a run without it.
  ema_params: Any = None

  @property
  def model_params(self) -> Any:
    """The parameters the run is judged by and exports: the average when kept, else `params`."""
    return self.params if self.ema_params is None else self.ema_params


def checkpoint_tree(state: TrainState) -> dict:
  """The state as a checkpoint holds it: its fields by name, `ema_params` only when kept.

  Orbax records a None field in the checkpoint's tree, and a tree with that
  entry will not restore onto one without it: leaving it out keeps the
  checkpoints of a run without EMA exactly those written before EMA existed,
  so those still resume.
  """
  tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
          "rng": state.rng}
  if state.ema_params is not None:
    tree["ema_params"] = state.ema_params
  return tree


def state_from_checkpoint_tree(tree: dict) -> TrainState:
  """The `TrainState` of a restored `checkpoint_tree`."""
  return TrainState(**tree)


def ema_decay_at(step: jax.Array, ema_decay: float) -> jax.Array:
  """The decay of the update after `step` updates: `ema_decay`, lower at first.

  min(ema_decay, (1 + step) / (10 + step)): the first updates (0.1, 0.18,
  0.25, ...) let the average leave the random initialisation quickly, so
  an early validation is not judging mostly untrained weights.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(ema_decay), (1.0 + step) / (10.0 + step))


def update_ema(ema_params: Any, params: Any, step: jax.Array, ema_decay: float) -> Any:
  """decay * ema + (1 - decay) * params, in float32, with the decay of `ema_decay_at`."""
  decay = ema_decay_at(step, ema_decay)
  return jax.tree.map(
      lambda average, new: decay * average + (1.0 - decay) * new.astype(jnp.float32),
      ema_params, params)


def step_batch(local_batch: dict, mesh) -> dict:
  """The global, sharded arrays a step reads, from this process's rows of a batch."""
  return sharding.put_batch({name: local_batch[name] for name in STEP_INPUTS}, mesh)


def train_step(state: TrainState, batch, *, graphdef, tx, label_smoothing: float,
               skip_nonfinite: bool = False, ema_decay: float = 0.0):
  """One optimizer step on a global batch; returns the new state and metric sums.

  With `ema_decay > 0` the state's `ema_params` (see `experiment.init_state`)
  move toward the updated parameters (`update_ema`).
  """
  if ema_decay > 0 and state.ema_params is None:
    raise ValueError("ema_decay > 0 needs a state with ema_params (experiment.init_state)")
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
  ema_params = (update_ema(state.ema_params, params, state.step, ema_decay)
                if ema_decay > 0 else state.ema_params)
  if skip_nonfinite:
    # A step with a non-finite loss leaves parameters, average and optimizer untouched.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    ema_params = keep(ema_params, state.ema_params)
    sums = {name: jnp.where(finite, value, 0.0) for name, value in sums.items()}
    grad_norm = jnp.where(finite, grad_norm, 0.0)
  sums = dict(sums, grad_norm=grad_norm, steps=jnp.float32(1), finite=finite.astype(jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       ema_params=ema_params), sums


def eval_step(params, batch, *, graphdef):
  """Teacher-forced metric sums of a batch (no label smoothing)."""
  model = nnx.merge(graphdef, params)
  logits = model(batch["inputs"], batch["targets"], deterministic=True)
  _, sums = metrics_lib.cross_entropy_sums(logits, batch["targets"], batch["example_mask"])
  return sums
