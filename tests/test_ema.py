"""The exponential moving average of the parameters (`ema_decay`).

The step updates the average by its rule and leaves training itself alone;
off, the state and its checkpoints are those of a run without it; on, the
average is what a run validates, exports and resumes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import random_models
from checkpoint_files import read_arrays
from flax import nnx

from polyflax import checkpoints, cli, config_checks, config_files, experiment, inference
from polyflax import models, steps, train, validation
from polyflax import vocab as vocab_lib

# The fields of a checkpoint's state before EMA existed.
PLAIN_FIELDS = {"step", "params", "opt_state", "rng"}


def leaves(tree):
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def tiny_model_and_batch():
  """(graphdef, params, batch) of a 1+1-layer model and two examples."""
  graphdef, params, batch = random_models.tiny_model_and_two_rows()
  return graphdef, params, {name: jnp.asarray(value) for name, value in batch.items()}


# ---------------------------------------------------------------------------
# The step.


def test_the_decay_warms_up_then_holds_at_ema_decay():
  assert float(steps.ema_decay_at(0, 0.999)) == pytest.approx(0.1)
  assert float(steps.ema_decay_at(1, 0.999)) == pytest.approx(2 / 11)
  assert float(steps.ema_decay_at(90, 0.999)) == pytest.approx(0.91)
  assert float(steps.ema_decay_at(100_000, 0.999)) == pytest.approx(0.999)


def test_the_step_moves_the_average_by_its_rule_and_trains_as_without_it():
  graphdef, params, batch = tiny_model_and_batch()
  tx = optax.adam(1e-2)
  ema_decay = 0.15  # under the warm-up's 0.18 from the second update on

  def compiled(decay):
    return jax.jit(functools.partial(steps.train_step, graphdef=graphdef, tx=tx,
                                     label_smoothing=0.0, ema_decay=decay))

  with_ema = experiment.init_state(params, tx, seed=0, ema_decay=ema_decay)
  without = experiment.init_state(params, tx, seed=0)
  assert without.ema_params is None
  # The average starts at the parameters, in float32.
  for average, param in zip(leaves(with_ema.ema_params), leaves(params), strict=True):
    np.testing.assert_array_equal(average, param)
    assert average.dtype == np.float32
  expected = leaves(with_ema.ema_params)
  step_with, step_without = compiled(ema_decay), compiled(0.0)
  for step in range(3):
    before = leaves(with_ema.ema_params)
    with_ema, _ = step_with(with_ema, batch)
    without, _ = step_without(without, batch)
    assert without.ema_params is None
    new_params = leaves(with_ema.params)
    # The average does not change the training: the same parameters either way.
    for a, b in zip(new_params, leaves(without.params), strict=True):
      np.testing.assert_array_equal(a, b)
    decay = min(ema_decay, (1 + step) / (10 + step))  # 0.1, then 0.15
    expected = [decay * average + (1 - decay) * param
                for average, param in zip(expected, new_params, strict=True)]
    after = leaves(with_ema.ema_params)
    for got, want in zip(after, expected, strict=True):
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
      assert got.dtype == np.float32
    # It moved toward the new parameters without reaching them.
    distance = lambda tree: sum(float(np.sum((a - p) ** 2)) for a, p in zip(tree, new_params))
    assert 0 < distance(after) < distance(before)
    assert int(with_ema.step) == step + 1


def test_without_ema_the_state_and_its_checkpoint_tree_are_as_before():
  graphdef, params, _ = tiny_model_and_batch()
  del graphdef
  tx = optax.adam(1e-2)
  plain = experiment.init_state(params, tx, seed=0)
  assert plain.model_params is plain.params
  assert set(steps.checkpoint_tree(plain)) == PLAIN_FIELDS
  averaged = experiment.init_state(params, tx, seed=0, ema_decay=0.9)
  assert averaged.model_params is averaged.ema_params
  tree = steps.checkpoint_tree(averaged)
  assert set(tree) == PLAIN_FIELDS | {checkpoints.EMA_PARAMS_FIELD}
  assert steps.state_from_checkpoint_tree(tree).ema_params is averaged.ema_params


def test_a_step_with_ema_needs_a_state_that_carries_it():
  graphdef, params, batch = tiny_model_and_batch()
  tx = optax.adam(1e-2)
  with pytest.raises(ValueError, match="ema_decay > 0 needs a state with ema_params"):
    steps.train_step(experiment.init_state(params, tx, seed=0), batch, graphdef=graphdef, tx=tx,
                     label_smoothing=0.0, ema_decay=0.9)


# ---------------------------------------------------------------------------
# The config and the checkpoint store.


def test_ema_decay_is_off_by_default_and_must_be_in_zero_one():
  config = config_files.load(config_files.CONFIG_DIR / "default.py")
  assert config.ema_decay == 0.0
  config_checks.check_config(config_files.set_fields(config, {"ema_decay": 0.999}))
  for bad in (1.0, -0.1):
    with pytest.raises(config_checks.ConfigError, match=r"ema_decay must be in \[0, 1\)"):
      config_checks.check_config(config_files.set_fields(config, {"ema_decay": bad}))


# ---------------------------------------------------------------------------
# A tiny run with EMA: validated, exported and resumed by its average.


def state_at(workdir, step):
  return read_arrays(workdir / "checkpoints" / str(step) / "state")


def by_path(tree):
  """{'encoder/layers/0/...': array} of a pytree: nnx states and Orbax dicts compare alike."""
  def name(key):
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
  return {"/".join(name(key) for key in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_same_leaves(tree_a, tree_b):
  a, b = by_path(tree_a), by_path(tree_b)
  assert sorted(a) == sorted(b) and len(a) > 10
  for path, array in a.items():
    np.testing.assert_array_equal(array, b[path], err_msg=path)


@pytest.mark.slow
def test_a_run_validates_exports_and_resumes_its_average(tmp_path, monkeypatch):
  # 2,000 lines: 23 steps of 64 an epoch, cut to 8; validation at steps 6 and 8.
  config = config_files.tiny(tmp_path / "inputs", generated_size=2000, max_steps=8,
                             val_check_interval=0.25, ema_decay=0.9)
  validated = []
  validate = validation.Validator.__call__

  def recording(self, params):
    validated.append(jax.device_get(params))
    return validate(self, params)

  monkeypatch.setattr(validation.Validator, "__call__", recording)
  straight = tmp_path / "straight"
  train.train_and_evaluate(config, str(straight))
  final = state_at(straight, 8)
  assert len(validated) == 2
  # Validation scored the average (and so chose the best checkpoint by it).
  assert_same_leaves(validated[-1], final["ema_params"])
  assert not np.array_equal(leaves(final["ema_params"])[0], leaves(final["params"])[0])

  # The exported model, and inference from the run, are the best step's average.
  store = checkpoints.CheckpointStore(str(straight / "checkpoints"), read_only=True)
  best = store.best_step()
  store.close()
  best_average = state_at(straight, best)["ema_params"]
  folder = tmp_path / "exported"
  assert cli.run("export", config_files.set_fields(config_files.tiny(config.data_dir),
                                                   {"export.dir": str(folder)}),
                 str(straight)) == 0
  assert_same_leaves(read_arrays(folder / "params"), best_average)
  for workdir in (straight, folder):
    model = inference.restore_for_inference(config, str(workdir))
    assert model.step == best
    assert_same_leaves(model.params, best_average)

  # A resumed run restores the average and ends with the same one.
  resumed = tmp_path / "resumed"
  train.train_and_evaluate(config, str(resumed), stop_at_step=4)
  assert checkpoints.EMA_PARAMS_FIELD in state_at(resumed, 4)
  without_ema = config_files.set_fields(config_files.tiny(config.data_dir),
                                        dict(generated_size=2000, max_steps=8,
                                             val_check_interval=0.25))
  with pytest.raises(checkpoints.CheckpointError, match="resume with ema_decay > 0"):
    train.train_and_evaluate(without_ema, str(resumed))
  train.train_and_evaluate(config, str(resumed))
  ended = state_at(resumed, 8)
  assert_same_leaves(ended["ema_params"], final["ema_params"])
  assert_same_leaves(ended["params"], final["params"])
