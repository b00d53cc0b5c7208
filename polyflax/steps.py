"""The training and evaluation steps: pure functions of the `TrainState` and a global batch.

`experiment.build` compiles them with `jax.jit` over the one-axis `data`
mesh (batch sharded, state replicated, the train state donated). Dropout
keys are `fold_in(rng, step)`, so a resumed run draws the same masks.
Metrics come back as sums with their denominators (`metrics.py`).

With `ema_decay > 0` the state also carries `ema_params`, a float32
exponential moving average of the parameters updated by every step; it is
then what the run validates, keeps as its best checkpoint and exports
(`TrainState.model_params`).

With `partial_products_weight > 0` the state also carries `head_params`,
the parameters of the partial-products head (`partial_products.py`), which
train with the model under the one optimizer (one gradient, clipped as a
whole) and are never exported: the step adds the weighted loss of the head
over the decoder's final hidden states to the token loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from polyflax import metrics as metrics_lib
from polyflax import partial_products
from polyflax import sharding
from polyflax.vocab import PAD_ID

# The arrays of a batch that a step reads (the batch's `index` stays on the host).
STEP_INPUTS = ("inputs", "targets", "example_mask")
# The field of a checkpoint's state holding the partial-products head, saved
# only by a run with partial_products_weight > 0.
HEAD_PARAMS_FIELD = "partial_products_head"


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
  # The partial-products head's parameters (partial_products_weight > 0);
  # None when off, so the state and its checkpoints are those of a run without it.
  head_params: Any = None

  @property
  def model_params(self) -> Any:
    """The parameters the run is judged by and exports: the average when kept, else `params`."""
    return self.params if self.ema_params is None else self.ema_params

  @property
  def trained_params(self) -> Any:
    """What the optimizer updates: `params`, and the head's beside them when there is one."""
    return trained_params(self.params, self.head_params)

  def with_trained_params(self, trained: Any) -> TrainState:
    """The state with `trained` (a `trained_params` tree) as its parameters."""
    if self.head_params is None:
      return self.replace(params=trained)
    return self.replace(params=trained["model"], head_params=trained[HEAD_PARAMS_FIELD])


def trained_params(params: Any, head_params: Any = None) -> Any:
  """`params` alone, or {"model": params, HEAD_PARAMS_FIELD: head_params} (one optimizer state)."""
  return params if head_params is None else {"model": params, HEAD_PARAMS_FIELD: head_params}


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
  if state.head_params is not None:
    tree[HEAD_PARAMS_FIELD] = state.head_params
  return tree


def state_from_checkpoint_tree(tree: dict) -> TrainState:
  """The `TrainState` of a restored `checkpoint_tree`."""
  tree = dict(tree)
  head_params = tree.pop(HEAD_PARAMS_FIELD, None)
  return TrainState(**tree, head_params=head_params)


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


def step_batch(local_batch: dict, mesh, names: tuple[str, ...] = STEP_INPUTS) -> dict:
  """The global, sharded arrays `names` a step reads, from this process's rows of a batch."""
  return sharding.put_batch({name: local_batch[name] for name in names}, mesh)


def train_step(state: TrainState, batch, *, graphdef, tx, label_smoothing: float,
               skip_nonfinite: bool = False, ema_decay: float = 0.0,
               head_graphdef=None, partial_products_weight: float = 0.0):
  """One optimizer step on a global batch; returns the new state and metric sums.

  With `ema_decay > 0` the state's `ema_params` (see `experiment.init_state`)
  move toward the updated parameters (`update_ema`). With
  `partial_products_weight > 0` the loss is the token loss plus that weight
  times the partial-products head's (`head_graphdef`, the state's
  `head_params`, the batch's `partial_products.BATCH_FIELDS`).
  """
  if ema_decay > 0 and state.ema_params is None:
    raise ValueError("ema_decay > 0 needs a state with ema_params (experiment.init_state)")
  learns_products = partial_products_weight > 0
  if learns_products != (state.head_params is not None) or (learns_products
                                                            and head_graphdef is None):
    raise ValueError("partial_products_weight > 0 needs a state with head_params and a "
                     "head_graphdef, and 0 a state without (experiment.build)")
  dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(trained):
    model = nnx.merge(graphdef, trained["model"] if learns_products else trained)
    outputs = model(batch["inputs"], batch["targets"], deterministic=False,
                    rngs=nnx.Rngs(dropout=dropout_key), return_hidden=learns_products)
    logits, hidden = outputs if learns_products else (outputs, None)
    loss, sums = metrics_lib.cross_entropy_sums(logits, batch["targets"], batch["example_mask"],
                                                label_smoothing)
    if learns_products:
      head = nnx.merge(head_graphdef, trained[HEAD_PARAMS_FIELD])
      head_loss, head_sums = partial_products.loss_sums(
          head(hidden), batch["partial_products"], batch["partial_products_mask"],
          batch["targets"] != PAD_ID)
      loss = loss + partial_products_weight * head_loss
      sums = dict(sums, **head_sums)
    return loss, sums

  trained = state.trained_params
  (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(sums["loss_sum"]) & jnp.isfinite(grad_norm)
  if learns_products:
    finite &= jnp.isfinite(sums["partial_products_loss_sum"])
  updates, opt_state = tx.update(grads, state.opt_state, trained)
  new_trained = optax.apply_updates(trained, updates)
  params = new_trained["model"] if learns_products else new_trained
  ema_params = (update_ema(state.ema_params, params, state.step, ema_decay)
                if ema_decay > 0 else state.ema_params)
  if skip_nonfinite:
    # A step with a non-finite loss leaves parameters, average and optimizer untouched.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_trained, opt_state = keep(new_trained, trained), keep(opt_state, state.opt_state)
    ema_params = keep(ema_params, state.ema_params)
    sums = {name: jnp.where(finite, value, 0.0) for name, value in sums.items()}
    grad_norm = jnp.where(finite, grad_norm, 0.0)
  sums = dict(sums, grad_norm=grad_norm, steps=jnp.float32(1), finite=finite.astype(jnp.float32))
  return state.with_trained_params(new_trained).replace(
      step=state.step + 1, opt_state=opt_state, ema_params=ema_params), sums


def eval_step(params, batch, *, graphdef):
  """Teacher-forced metric sums of a batch (no label smoothing)."""
  model = nnx.merge(graphdef, params)
  logits = model(batch["inputs"], batch["targets"], deterministic=True)
  _, sums = metrics_lib.cross_entropy_sums(logits, batch["targets"], batch["example_mask"])
  return sums
