"""Checks of an experiment config, run before anything is built or compiled.

Each problem is reported with the field and what to change.
"""

from __future__ import annotations

import ml_collections

from polyflax import bucketing
from polyflax import row_mix
from polyflax import vocab as vocab_lib

# The allowed values of the config's choice fields, defined here once; the
# code that acts on each field reads them from here.
LR_SCHEDULES = ("cosine", "rsqrt")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
TRAIN_DATA = ("split", "generated")


class ConfigError(ValueError):
  """An experiment config that cannot run, with what to change."""


_POSITIVE_INTS = (
    "batch_size", "max_epochs", "max_len", "eval_batch_size", "log_every_steps",
    "checkpoints_to_keep", "generated_size", "model.hidden_dim", "model.num_heads",
    "model.encoder_layers", "model.decoder_layers", "model.encoder_ff_dim",
    "model.decoder_ff_dim", "eval.batch_size", "eval.beam_size",
)


def _row_mix_problems(config) -> list[str]:
  """What is wrong with the generated stream's row mix (`generated_*_fraction`)."""
  problems, shares = [], {}
  for name in row_mix.RowMix.state_keys():
    share = config.get(name, 0.0)
    if (not isinstance(share, (int, float)) or isinstance(share, bool)
        or not 0.0 <= share < 1.0):
      problems.append(f"{name} must be in [0, 1) (got {share!r})")
    elif share and config.train_data != "generated":
      problems.append(f"{name}={share!r} applies to train_data='generated' only: "
                      "set train_data='generated', or leave it 0")
    else:
      shares[name] = share
  if not problems and sum(shares.values()) >= 1.0:
    problems.append(f"{' + '.join(shares)} must sum below 1 (got {sum(shares.values())!r})")
  return problems


def _get(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def _one_of(allowed: tuple[str, ...]) -> str:
  """'a', 'b' or 'c'."""
  quoted = [repr(value) for value in allowed]
  return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def check_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Raises ConfigError listing every problem found in `config`."""
  problems = []
  for name in _POSITIVE_INTS:
    value = _get(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      problems.append(f"{name} must be a positive integer (got {value!r})")
  hidden, heads = config.model.hidden_dim, config.model.num_heads
  if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
    problems.append(f"model.hidden_dim={hidden} is not divisible by model.num_heads={heads}: "
                    f"use a hidden_dim that is a multiple of {heads}, or another num_heads")
  if isinstance(config.batch_size, int) and config.batch_size > 0 and config.batch_size % num_devices:
    problems.append(f"batch_size={config.batch_size} does not divide over {num_devices} devices: "
                    f"use a multiple of {num_devices}")
  for name in ("model.dropout_rate", "model.attention_dropout_rate", "label_smoothing",
               "ema_decay"):
    value = _get(config, name)
    if not 0.0 <= value < 1.0:
      problems.append(f"{name} must be in [0, 1) (got {value!r})")
  if not 0.0 < config.val_check_interval <= 1.0:
    problems.append(f"val_check_interval must be in (0, 1] of an epoch (got {config.val_check_interval!r})")
  if config.partial_products_weight < 0:
    problems.append(f"partial_products_weight must be >= 0 (got {config.partial_products_weight!r})")
  if config.learning_rate <= 0:
    problems.append(f"learning_rate must be positive (got {config.learning_rate!r})")
  for name, allowed in (("lr_schedule", LR_SCHEDULES), ("compute_dtype", COMPUTE_DTYPES),
                        ("train_data", TRAIN_DATA), ("digit_order", vocab_lib.DIGIT_ORDERS),
                        ("constant_per_batch", bucketing.BATCH_CONSTANTS)):
    if _get(config, name) not in allowed:
      problems.append(f"{name} must be {_one_of(allowed)} (got {_get(config, name)!r})")
  for name in ("max_steps", "generated_examples_per_epoch", "val_early_every_examples",
               "val_early_until_examples"):
    value = _get(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      problems.append(f"{name} must be an integer >= 0 (got {value!r})")
  problems.extend(_early_validation_problems(config.val_early_every_examples,
                                             config.val_early_until_examples))
  problems += _row_mix_problems(config)
  buckets = tuple(config.length_buckets)
  if (not buckets or any(not isinstance(b, int) or b <= 0 for b in buckets)
      or list(buckets) != sorted(set(buckets))):
    problems.append(f"length_buckets must be increasing positive integers (got {buckets!r})")
  elif isinstance(config.max_len, int) and buckets[-1] < config.max_len:
    problems.append(f"the last of length_buckets={buckets!r} must be at least "
                    f"max_len={config.max_len}: add a bucket of {config.max_len}")
  if problems:
    raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _early_validation_problems(every, until) -> list[str]:
  """What is wrong with the early validations' two fields, set together or not at all."""
  if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0
             for value in (every, until)):
    return []  # said by the check of integers >= 0
  if every and not until:
    return [f"val_early_every_examples={every} needs val_early_until_examples > 0, the "
            "training examples up to which to validate that often"]
  if until and not every:
    return [f"val_early_until_examples={until} needs val_early_every_examples > 0, how "
            "many training examples apart to validate until then"]
  if every > until:
    return [f"val_early_every_examples={every} is over val_early_until_examples={until}: no "
            "early validation would happen; lower it, or raise val_early_until_examples"]
  return []


def check_param_count(num_params: int, config: ml_collections.ConfigDict) -> None:
  """Refuses a model over the task's parameter cap unless the config allows it."""
  if num_params > config.max_params and not config.allow_over_max_params:
    raise ConfigError(
        f"the model has {num_params:,} parameters, over the cap of {config.max_params:,} "
        "(the original task's 5M limit): shrink the model, or set "
        "--config.allow_over_max_params=True to go over it on purpose")
