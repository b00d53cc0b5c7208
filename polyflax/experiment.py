"""What a training run builds from its config before the loop: model, optimizer, compiled steps.

`build(config, total_steps, mesh)` returns the `Experiment` (the mesh,
vocabulary, model record and graph, learning-rate schedule and the two
steps of `steps.py`, compiled over the mesh) and, apart from it, the
initial `TrainState`: the state changes at every step and belongs to the
loop, so the experiment holds nothing that goes stale.

The steps are compiled from module-level functions whose settings are
static, hashable arguments (`TrainStepSettings`): JAX keeps the programs it
traced and compiled for a function and its static arguments, so a second
run of the same model and settings in one process (a notebook, a sweep, the
tests) reuses them instead of tracing and compiling again.

Training code only: inference builds its model with `model_setup.py` and
never imports this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from polyflax import config_checks
from polyflax import model_setup
from polyflax import models
from polyflax import partial_products
from polyflax import sharding
from polyflax import steps
from polyflax import vocab as vocab_lib


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """The config's optimizer fields (configs/default.py says what each is), hashable.

  The compiled train step builds its optimizer from them: a static argument
  (see the module docstring), where the config itself is not hashable.
  """
  learning_rate: float
  warmup_steps: int
  lr_schedule: str
  lr_final_fraction: float
  weight_decay: float
  adam_b1: float
  adam_b2: float
  adam_eps: float
  grad_clip_norm: float | None

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> OptimizerSettings:
    return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class TrainStepSettings:
  """Everything the train step's program depends on but the arrays it reads, hashable."""
  graphdef: Any
  optimizer: OptimizerSettings
  label_smoothing: float
  skip_nonfinite: bool
  ema_decay: float
  head_graphdef: Any  # the partial-products head's; None when the run does not learn it
  partial_products_weight: float


def learning_rate_schedule(config: OptimizerSettings, total_steps) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then rsqrt or cosine decay.

  `total_steps` is an int, or the train step's traced argument (`build`):
  the run's length is then an input of the compiled step, not a constant in
  it, so runs that differ only in their length share one program.
  """
  peak, warmup = config.learning_rate, max(1, config.warmup_steps)
  warmup_fn = optax.linear_schedule(0.0, peak, warmup)
  if config.lr_schedule == "cosine":
    decay_fn = _cosine_decay(peak, jnp.maximum(1, total_steps - warmup), config.lr_final_fraction)
  elif config.lr_schedule == "rsqrt":
    decay_fn = lambda step: peak * jnp.sqrt(warmup / (step + warmup))
  else:
    raise ValueError(f"lr_schedule must be one of {config_checks.LR_SCHEDULES}, "
                     f"not {config.lr_schedule!r}")
  return optax.join_schedules([warmup_fn, decay_fn], [warmup])


def _cosine_decay(peak: float, decay_steps, alpha: float) -> optax.Schedule:
  """optax.cosine_decay_schedule's values, for `decay_steps` that may be traced.

  optax's own checks `decay_steps > 0` in Python, which a traced value
  cannot answer; `learning_rate_schedule` keeps it at least 1. The same
  float32 arithmetic as optax 0.2's, so a run's learning rates are unchanged.
  """
  decay_steps = jnp.asarray(decay_steps, jnp.float32)

  def schedule(count):
    count = jnp.minimum(count, decay_steps)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps))
    return peak * ((1 - alpha) * cosine + alpha)

  return schedule


def make_optimizer(config: OptimizerSettings, schedule: optax.Schedule):
  """AdamW with global-norm gradient clipping."""
  parts = []
  if config.grad_clip_norm and config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2,
                           eps=config.adam_eps, weight_decay=config.weight_decay))
  return optax.chain(*parts)


def init_state(params, tx, seed: int, ema_decay: float = 0.0,
               head_params=None) -> steps.TrainState:
  """Step 0: the initial parameters, a fresh optimizer state and the dropout key.

  With `ema_decay > 0`, also the parameters' moving average, started at a
  float32 copy of them (a copy: the step donates the state, and one buffer
  cannot be donated twice). With `head_params` (the partial-products head),
  the optimizer state covers them too.
  """
  ema_params = None
  if ema_decay > 0:
    ema_params = jax.tree.map(lambda x: jnp.array(x, dtype=jnp.float32, copy=True), params)
  return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(steps.trained_params(params, head_params)),
                          rng=jax.random.key_data(jax.random.key(seed + 1)),
                          ema_params=ema_params, head_params=head_params)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What a training run builds from its config: everything but the state it trains."""
  config: ml_collections.ConfigDict
  mesh: Any
  vocab: vocab_lib.Vocab
  model_cfg: models.ModelConfig
  graphdef: Any
  num_params: int
  schedule: Callable  # step -> learning rate
  # (state, global batch) -> (state, metric sums); donates the state.
  train_step: Callable
  # (params, global batch) -> metric sums, teacher forced.
  eval_step: Callable
  # Digit slots of the partial products' targets; 0 when the run does not learn them.
  partial_products_digits: int = 0

  @property
  def fingerprint(self) -> dict:
    """The model fields every checkpoint of the run records."""
    return model_setup.model_fingerprint(self.model_cfg)

  def train_batch(self, local_batch: dict) -> dict:
    """The global, sharded arrays the train step reads, from this process's rows of a batch.

    With the partial-products task on, its targets are computed here, on the
    host, from the rows' input tokens, and sharded like the rest.
    """
    if not self.partial_products_digits:
      return steps.step_batch(local_batch, self.mesh)
    local_batch = partial_products.with_targets(local_batch, self.vocab,
                                                self.partial_products_digits)
    return steps.step_batch(local_batch, self.mesh,
                            steps.STEP_INPUTS + partial_products.BATCH_FIELDS)


def _train_step_of_run(state, batch, steps_in_run, settings: TrainStepSettings):
  """`steps.train_step` with the optimizer of a run of `steps_in_run` steps.

  The run's length is an input of the program, not a constant in it: runs
  of one model that differ only in length (max_epochs, max_steps) share one
  program, which the persistent compilation cache also serves.
  """
  tx = make_optimizer(settings.optimizer,
                      learning_rate_schedule(settings.optimizer, steps_in_run))
  return steps.train_step(state, batch, graphdef=settings.graphdef, tx=tx,
                          label_smoothing=settings.label_smoothing,
                          skip_nonfinite=settings.skip_nonfinite,
                          ema_decay=settings.ema_decay, head_graphdef=settings.head_graphdef,
                          partial_products_weight=settings.partial_products_weight)


def _eval_step(params, batch, graphdef):
  """`steps.eval_step`, its graph a positional (static) argument."""
  return steps.eval_step(params, batch, graphdef=graphdef)


def build(config: ml_collections.ConfigDict, total_steps: int,
          mesh=None) -> tuple[Experiment, steps.TrainState]:
  """The experiment of `config` and its initial state, replicated over `mesh`.

  Raises:
    ConfigError: if the model is over the parameter cap.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  vocab = vocab_lib.Vocab.default(config.digit_order)
  model_cfg = model_setup.model_config(config, vocab.size)
  graphdef, params = model_setup.create_model(model_cfg, config.seed)
  num_params = models.count_params(params)
  config_checks.check_param_count(num_params, config)
  optimizer = OptimizerSettings.of(config)
  schedule = learning_rate_schedule(optimizer, total_steps)  # the host's, for the logs
  tx = make_optimizer(optimizer, schedule)
  # The partial-products head: trained beside the model, never part of it.
  head_graphdef, head_params, digits = None, None, 0
  if config.partial_products_weight > 0:
    digits = partial_products.digit_slots()
    head_graphdef, head_params = partial_products.create_head(model_cfg.hidden_dim, digits,
                                                              config.seed + 2)
  state = sharding.put_replicated(
      init_state(params, tx, config.seed, config.ema_decay, head_params), mesh)
  replicated = sharding.replicated(mesh)
  batch_sharded = sharding.batch_sharded(mesh)
  settings = TrainStepSettings(
      graphdef=graphdef, optimizer=optimizer, label_smoothing=config.label_smoothing,
      skip_nonfinite=config.skip_nonfinite_steps, ema_decay=config.ema_decay,
      head_graphdef=head_graphdef, partial_products_weight=config.partial_products_weight)
  compiled_train_step = jax.jit(_train_step_of_run, static_argnums=(3,),
                                in_shardings=(replicated, batch_sharded, replicated),
                                out_shardings=(replicated, replicated),
                                donate_argnums=(0,))
  steps_in_run = sharding.put_replicated(jnp.int32(total_steps), mesh)
  train_step = lambda state, batch: compiled_train_step(state, batch, steps_in_run, settings)
  compiled_eval_step = jax.jit(_eval_step, static_argnums=(2,),
                               in_shardings=(replicated, batch_sharded), out_shardings=replicated)
  eval_step = lambda params, batch: compiled_eval_step(params, batch, graphdef)
  experiment = Experiment(config=config, mesh=mesh, vocab=vocab, model_cfg=model_cfg,
                          graphdef=graphdef, num_params=num_params, schedule=schedule,
                          train_step=train_step, eval_step=eval_step,
                          partial_products_digits=digits)
  return experiment, state


def compile_train_step(experiment: Experiment, state: steps.TrainState, shapes) -> int:
  """Compiles the train step for every (local batch size, length); returns how many.

  Each compile runs one step on a batch of masked padding rows and a
  throwaway copy of `state` (the step donates its input), so neither the
  state nor the data order changes.
  """
  return sharding.compile_shapes(
      lambda batch: experiment.train_step(jax.tree.map(lambda x: x.copy(), state),
                                          experiment.train_batch(batch)),
      shapes)
