"""What the README promises of training options: max_steps, the parameter cap,
gradient clipping, bfloat16 compute, hyperparameters in TensorBoard, fast_dev_run.

Each runs the tiny config for a few steps through `train.train_and_evaluate`,
on the session's data folder (conftest.py). A run in bfloat16 is tested in
test_bfloat16.py.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checkpoint_files import read_arrays
from flax import nnx
from tensorboardX.proto import plugin_hparams_pb2

from polyflax import checkpoints, cli, config_files, events, models, train
from polyflax import metrics as metrics_lib
from polyflax import vocab as vocab_lib

# Every test here trains or decodes at length (see pytest.ini).
pytestmark = pytest.mark.slow

# 2,000 generated lines: 1,520 training examples (23 steps of 64 per epoch)
# and 80 validation lines.
COMMON = {"generated_size": 2000, "val_exact_match_examples": 0}
MAX_STEPS = 9
WARMUP_STEPS = 2


def tiny_config(data_dir, **fields):
  return config_files.tiny(data_dir, **dict(COMMON, **fields))


def saved_steps(workdir):
  store = checkpoints.CheckpointStore(str(workdir / "checkpoints"), read_only=True)
  try:
    return store.all_steps()
  finally:
    store.close()


def short_run_config(data_dir, **fields):
  """Two epochs (46 steps) cut to MAX_STEPS by max_steps, logging every step."""
  return tiny_config(data_dir, max_epochs=2, max_steps=MAX_STEPS, warmup_steps=WARMUP_STEPS,
                     log_every_steps=1, **fields)


@pytest.fixture(scope="module")
def short_run(data_dir, tmp_path_factory):
  """(config, workdir) of a float32 run of `short_run_config`.

  A run of its own, not the session's tiny run: what max_steps does to the
  learning-rate schedule shows only in a run cut by max_steps from its first
  step, with a short warmup and every step logged.
  """
  config = short_run_config(data_dir)
  workdir = tmp_path_factory.mktemp("short_run") / "run"
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


# ---------------------------------------------------------------------------
# max_steps


def test_max_steps_ends_the_run_and_its_learning_rate_schedule(short_run):
  config, workdir = short_run
  scalars = events.read_scalars(workdir)
  assert [step for step, _ in scalars["train/loss"]] == list(range(1, MAX_STEPS + 1))
  assert [step for step, _ in scalars["val/loss"]] == [MAX_STEPS]  # the last step validates
  assert saved_steps(workdir) == [MAX_STEPS]
  # Linear warmup, then a cosine that reaches zero at step MAX_STEPS (not at
  # the end of the two epochs). The rate logged at a step is that of the
  # update that made it, whose count is the step - 1.
  peak, decay_steps = config.learning_rate, MAX_STEPS - WARMUP_STEPS

  def expected_rate(step):
    count = step - 1
    if count < WARMUP_STEPS:
      return peak * count / WARMUP_STEPS
    return peak * 0.5 * (1 + math.cos(math.pi * (count - WARMUP_STEPS) / decay_steps))

  logged = scalars["train/learning_rate"]
  assert [step for step, _ in logged] == list(range(1, MAX_STEPS + 1))
  np.testing.assert_allclose([rate for _, rate in logged],
                             [expected_rate(step) for step, _ in logged], rtol=1e-5, atol=1e-9)
  assert logged[-1][1] < 0.06 * peak  # one update from the end of the cosine


# ---------------------------------------------------------------------------
# Hyperparameters in TensorBoard


def logged_hyperparameters(workdir):
  """{name: value} of the hparams plugin's session start in the run's event files."""
  found = {}
  for path in events.event_files(workdir):
    for event in events.read_events(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name != "hparams":
          continue
        data = plugin_hparams_pb2.HParamsPluginData.FromString(
            value.metadata.plugin_data.content)
        for name, hparam in data.session_start_info.hparams.items():
          found[name] = getattr(hparam, hparam.WhichOneof("kind"))
  return found


def flatten(tree, prefix=""):
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def test_hyperparameters_of_the_run_are_in_its_tensorboard_events(short_run):
  _, workdir = short_run
  logged = logged_hyperparameters(workdir)
  saved = flatten(json.loads((workdir / "config.json").read_text(encoding="utf-8")))
  assert set(logged) == set(saved) | {"num_params"}
  assert logged["num_params"] == 22_560
  for name, value in saved.items():
    if isinstance(value, (bool, str)):
      assert logged[name] == value, name
    elif isinstance(value, (int, float)):
      assert logged[name] == pytest.approx(value), name
  assert (logged["max_steps"], logged["model.hidden_dim"]) == (MAX_STEPS, 32)


# ---------------------------------------------------------------------------
# The parameter cap


def test_allow_over_max_params_lets_a_model_over_the_cap_train(data_dir, tmp_path, capsys):
  capped = tiny_config(data_dir, max_params=1000, fast_dev_run=True)
  assert cli.run("train", capped, str(tmp_path / "refused")) == 2
  assert "22,560 parameters, over the cap of 1,000" in capsys.readouterr().err
  allowed = tiny_config(data_dir, max_params=1000, allow_over_max_params=True,
                        fast_dev_run=True)
  metrics = train.train_and_evaluate(allowed, str(tmp_path / "allowed"))
  assert np.isfinite(metrics["loss"])


# ---------------------------------------------------------------------------
# Gradient clipping


def global_norm(arrays):
  return math.sqrt(sum(float(np.sum(np.square(array, dtype=np.float64))) for array in arrays))


def test_gradient_clipping_bounds_the_update_by_the_clip_norm(data_dir, tmp_path):
  """The update of a step follows the clipped gradient, not the gradient.

  Adam without momentum (b1 = b2 = 0) and with eps = 1 turns a gradient g
  into g / (|g| + 1), elementwise: for a gradient clipped to a global norm
  `clip` of 1e-3, whose elements are then at most 1e-3, that is the clipped
  gradient itself within 0.1%. The first update has a learning rate of 0
  (the warmup starts there), so the difference between the checkpoints of
  steps 1 and 2 is the second update: learning rate x clipped gradient.
  """
  clip = 1e-3
  config = tiny_config(data_dir, max_steps=2, warmup_steps=1, learning_rate=10.0,
                       adam_b1=0.0, adam_b2=0.0, adam_eps=1.0, weight_decay=0.0,
                       grad_clip_norm=clip, log_every_steps=1,
                       val_check_interval=0.01)  # validate, and so save, every step
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  assert saved_steps(workdir) == [1, 2]
  params = {step: jax.tree.leaves(read_arrays(workdir / "checkpoints" / str(step) / "state")
                                  ["params"]) for step in (1, 2)}
  scalars = dict((tag, dict(values)) for tag, values in events.read_scalars(workdir).items())
  rate, grad_norm = scalars["train/learning_rate"][2], scalars["train/grad_norm"][2]
  assert rate == pytest.approx(10.0)
  assert grad_norm > 10 * clip  # the gradient (logged before clipping) is clipped
  update = [after - before for before, after in zip(params[1], params[2], strict=True)]
  assert global_norm(update) / rate == pytest.approx(clip, rel=2e-3)


# ---------------------------------------------------------------------------
# bfloat16 compute


def test_bfloat16_compute_keeps_parameters_and_loss_in_float32():
  vocab = vocab_lib.Vocab.default()
  model_cfg = models.ModelConfig(vocab_size=vocab.size, hidden_dim=32, num_heads=4,
                                 encoder_layers=1, decoder_layers=1, encoder_ff_dim=64,
                                 decoder_ff_dim=64, max_len=32, dtype=jnp.bfloat16)
  graphdef, params = nnx.split(models.Transformer(model_cfg, rngs=nnx.Rngs(0)), nnx.Param)
  inputs = jnp.asarray(vocab.encode_batch(["(k-15)*(2*k+29)", "(21-t)*(-6*t-4)"], 32))
  targets = jnp.asarray(vocab.encode_batch(["2*k**2-k-435", "6*t**2-122*t-84"], 32))

  def loss(params):
    logits = nnx.merge(graphdef, params)(inputs, targets, deterministic=True)
    mean_loss, _ = metrics_lib.cross_entropy_sums(logits, targets, jnp.ones((2,)))
    return mean_loss, logits

  # The matrix products run in bfloat16 ...
  assert "bf16" in str(jax.make_jaxpr(loss)(params))
  # ... while the parameters, logits, loss and gradients are float32.
  (loss_shape, logits_shape), grads_shape = jax.eval_shape(
      jax.value_and_grad(loss, has_aux=True), params)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  assert loss_shape.dtype == logits_shape.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(grads_shape)} == {jnp.dtype(jnp.float32)}


# ---------------------------------------------------------------------------
# fast_dev_run


def test_fast_dev_run_runs_one_training_and_one_validation_batch(data_dir, tmp_path,
                                                                 monkeypatch):
  examples_per_batch = []
  cross_entropy_sums = metrics_lib.cross_entropy_sums

  def counted(logits, targets, example_mask, *args, **kwargs):
    # Runs each time a compiled step computes a loss (a training or an evaluation batch).
    jax.debug.callback(lambda count: examples_per_batch.append(int(count)),
                       jnp.sum(example_mask))
    return cross_entropy_sums(logits, targets, example_mask, *args, **kwargs)

  monkeypatch.setattr(metrics_lib, "cross_entropy_sums", counted)
  # The steps must be traced again with the counting loss: JAX would reuse a
  # program an earlier test in this process compiled for the tiny model.
  jax.clear_caches()
  # Validation batches of 8: the 80 validation lines would make 10.
  config = tiny_config(data_dir, fast_dev_run=True, eval_batch_size=8)
  metrics = train.train_and_evaluate(config, str(tmp_path / "dev"))
  jax.effects_barrier()
  assert sorted(examples_per_batch) == [8, 64]  # one validation batch, one training batch
  assert np.isfinite(metrics["loss"])
  assert not (tmp_path / "dev").exists()
