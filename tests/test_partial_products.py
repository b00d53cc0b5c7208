"""The partial-products auxiliary task (`partial_products_weight`).

Its targets are a*d and b*c of the factors as printed, in either digit
order; the head trains with the model through one step and one optimizer;
off, the state, its checkpoints and the step are those of a run without it;
on, a run logs the head's loss, checkpoints the head and exports the model
alone.
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import forked_python  # tests/: subprocesses forked from one that has imported jax
import random_models
from checkpoint_files import read_arrays
from flax import nnx
from polyflax.events import read_scalars

from polyflax import algebra, checkpoints, cli, config_checks, config_files, experiment, generate
from polyflax import models, partial_products, steps, train
from polyflax import vocab as vocab_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = partial_products.digit_slots()


def decoded(slots):
  """The integer of a product's slots (sign, then digits least significant first)."""
  magnitude = sum(int(digit) * 10**power for power, digit in enumerate(slots[1:]))
  return -magnitude if slots[0] == partial_products.NEGATIVE else magnitude


# ---------------------------------------------------------------------------
# Targets.


def test_the_slots_come_from_the_generators_ranges():
  assert DIGITS == 3  # 9 * 32 = 288
  wider = generate.GeneratorConfig(coefficient_range=(-20, 8), constant_range=(-60, 31))
  assert partial_products.digit_slots(wider) == 4  # 20 * 60 = 1200
  narrow = generate.GeneratorConfig(coefficient_range=(-1, 1), constant_range=(-9, 9))
  assert partial_products.digit_slots(narrow) == 1


def test_a_product_is_a_sign_then_digits_least_significant_first():
  np.testing.assert_array_equal(partial_products.encode_product(-126, 3), [1, 6, 2, 1])
  np.testing.assert_array_equal(partial_products.encode_product(4, 3), [0, 4, 0, 0])
  np.testing.assert_array_equal(partial_products.encode_product(0, 3), [0, 0, 0, 0])
  np.testing.assert_array_equal(partial_products.encode_product(288, 3), [0, 8, 8, 2])
  assert partial_products.encode_product(1000, 3) is None
  assert partial_products.encode_product(-1000, 3) is None


# (factored text, (a*d, b*c)) with the factors as printed.
KNOWN = [
    ("(21-t)*(-6*t-4)", (4, -126)),  # a=-1, b=21, c=-6, d=-4
    ("(-7*a-24)*(4*a-31)", (217, -96)),
    ("-3*k*(2*k-5)", (15, 0)),  # k*u*(c*u+d): (-3*k+0)*(2*k-5)
    ("x*(x+1)", (1, 0)),
    ("(z+3)**2", (3, 3)),
    ("(19-5*h)*(5*h+19)", (-95, 95)),  # the linear term cancels
    ("5*(27-6*sin(j))*sin(j)", (135, 0)),
    ("(cos(x)-32)*(8*cos(x)+31)", (31, -256)),
    ("-7*tan(i)**2", (0, 0)),
]


@pytest.mark.parametrize("digit_order", vocab_lib.DIGIT_ORDERS)
def test_targets_of_known_lines_in_either_digit_order(digit_order):
  vocab = vocab_lib.Vocab.default(digit_order)
  texts = [text for text, _ in KNOWN]
  fields = partial_products.batch_targets(vocab.encode_batch(texts, 32), vocab, DIGITS)
  targets, mask = fields["partial_products"], fields["partial_products_mask"]
  assert targets.shape == (len(KNOWN), 2, 1 + DIGITS) and targets.dtype == np.int32
  np.testing.assert_array_equal(mask, np.ones(len(KNOWN)))
  for (text, expected), row in zip(KNOWN, targets, strict=True):
    assert (decoded(row[0]), decoded(row[1])) == expected, text
  # The reversed vocabulary really reverses the digits the model sees.
  if digit_order == "reversed":
    assert vocab.encode_batch(["(21-t)*(-6*t-4)"], 32)[0, 1] == vocab.encode("1")[0]
  np.testing.assert_array_equal(targets[0], [[0, 4, 0, 0], [1, 6, 2, 1]])


def test_the_products_sum_to_the_linear_coefficient_of_generated_rows():
  lines = generate.generate_lines(300, seed=3)
  factored = [line.split("=")[0] for line in lines]
  vocab = vocab_lib.Vocab.default("reversed")
  fields = partial_products.batch_targets(vocab.encode_batch(factored, 32), vocab, DIGITS)
  assert fields["partial_products_mask"].all()
  for text, row in zip(factored, fields["partial_products"], strict=True):
    linear = algebra.parse_factored(text).product_coefficients()[1]
    assert decoded(row[0]) + decoded(row[1]) == linear, text


def test_padding_and_unparseable_rows_have_no_targets():
  vocab = vocab_lib.Vocab.default()
  texts = ["(21-t)*(-6*t-4)", "", "x+1", "(x+1)*(x+1)*(x+1)", "(x+1)*(y+1)", "(x-99)*(9*x+1)"]
  batch = {"inputs": vocab.encode_batch(texts, 32),
           "example_mask": np.array([1, 0, 1, 1, 1, 1], np.float32)}
  fields = partial_products.with_targets(batch, vocab, DIGITS)
  # The last row's constant is outside the generator's range; its products still fit.
  np.testing.assert_array_equal(fields["partial_products_mask"], [1, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(fields["partial_products"][1:5], 0)
  assert (decoded(fields["partial_products"][5][0]), decoded(fields["partial_products"][5][1])) \
      == (1, -891)
  too_big = partial_products.text_targets(["(9*x-999)*(9*x+1)"], DIGITS)
  np.testing.assert_array_equal(too_big[1], [0])
  # A padding batch (what compiling a step feeds) has none at all.
  padding = {"inputs": np.zeros((4, 12), np.int32), "example_mask": np.zeros(4, np.float32)}
  assert not partial_products.with_targets(padding, vocab, DIGITS)["partial_products_mask"].any()


# ---------------------------------------------------------------------------
# The head's loss.


def test_the_loss_counts_real_positions_of_rows_with_targets_per_slot():
  targets = jnp.asarray([[[0, 4, 0, 0], [1, 6, 2, 1]], [[0, 1, 0, 0], [0, 0, 0, 0]]])
  perfect = 50.0 * jax.nn.one_hot(jnp.broadcast_to(targets[:, None], (2, 3, 2, 4)), 10)
  position_mask = jnp.asarray([[1, 1, 0], [1, 0, 0]])
  loss, sums = partial_products.loss_sums(perfect, targets, jnp.asarray([1.0, 0.0]),
                                          position_mask)
  assert float(sums["partial_products_slots"]) == 2 * 8  # 2 positions of row 0, 8 slots
  assert float(sums["partial_products_correct"]) == 16
  assert float(loss) < 1e-6
  uniform = jnp.zeros((2, 3, 2, 4, 10))
  loss, sums = partial_products.loss_sums(uniform, targets, jnp.ones(2), position_mask)
  assert float(sums["partial_products_slots"]) == 3 * 8
  np.testing.assert_allclose(float(loss), np.log(10), rtol=1e-6)


# ---------------------------------------------------------------------------
# The step.


def tiny_model_and_batch():
  """(graphdef, params, batch with the task's targets) of a 1+1-layer model and two rows."""
  graphdef, params, batch = random_models.tiny_model_and_two_rows()
  batch = partial_products.with_targets(batch, vocab_lib.Vocab.default(), DIGITS)
  return graphdef, params, {name: jnp.asarray(value) for name, value in batch.items()}


def leaves(tree):
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def test_the_model_returns_its_hidden_states_only_on_request():
  graphdef, params, batch = tiny_model_and_batch()
  model = nnx.merge(graphdef, params)
  logits = model(batch["inputs"], batch["targets"])
  with_hidden, hidden = model(batch["inputs"], batch["targets"], return_hidden=True)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(with_hidden))
  assert hidden.shape == batch["targets"].shape + (16,) and hidden.dtype == jnp.float32


def test_the_head_trains_with_the_model_and_off_the_state_is_as_before():
  graphdef, params, batch = tiny_model_and_batch()
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  head_graphdef, head_params = partial_products.create_head(16, DIGITS, seed=2)
  with_head = experiment.init_state(params, tx, seed=0, head_params=head_params)
  without = experiment.init_state(params, tx, seed=0)
  # Off: the fields, optimizer state and checkpoint of a run before the task existed.
  assert without.head_params is None
  assert set(steps.checkpoint_tree(without)) == {"step", "params", "opt_state", "rng"}
  assert jax.tree.structure(without.opt_state) == jax.tree.structure(tx.init(params))
  tree = steps.checkpoint_tree(with_head)
  assert set(tree) == {"step", "params", "opt_state", "rng", steps.HEAD_PARAMS_FIELD}
  assert steps.state_from_checkpoint_tree(tree).head_params is head_params

  def compiled(weight):
    return jax.jit(functools.partial(
        steps.train_step, graphdef=graphdef, tx=tx, label_smoothing=0.0,
        head_graphdef=head_graphdef if weight else None, partial_products_weight=weight))

  plain_step = compiled(0.0)
  head_step = compiled(0.5)
  plain_batch = {name: batch[name] for name in steps.STEP_INPUTS}
  before_head = leaves(with_head.head_params)
  for _ in range(3):
    with_head, head_sums = head_step(with_head, batch)
    without, plain_sums = plain_step(without, plain_batch)
  assert "partial_products_loss_sum" not in plain_sums
  assert np.isfinite(float(head_sums["partial_products_loss_sum"]))
  assert float(head_sums["partial_products_slots"]) == float(head_sums["token_count"]) * 8
  # The head learns, and its gradient reaches the model.
  assert any(not np.array_equal(a, b) for a, b in zip(before_head, leaves(with_head.head_params)))
  assert any(not np.array_equal(a, b)
             for a, b in zip(leaves(with_head.params), leaves(without.params)))
  assert jax.tree.structure(with_head.params) == jax.tree.structure(without.params)
  with pytest.raises(ValueError, match="partial_products_weight > 0 needs a state"):
    head_step(experiment.init_state(params, tx, seed=0), batch)


def test_the_weight_is_off_by_default_and_may_not_be_negative():
  config = config_files.load(config_files.CONFIG_DIR / "default.py")
  assert config.partial_products_weight == 0.0
  config_checks.check_config(config_files.set_fields(config, {"partial_products_weight": 0.1}))
  with pytest.raises(config_checks.ConfigError,
                     match=r"partial_products_weight must be >= 0 \(got -0.1\)"):
    config_checks.check_config(config_files.set_fields(config, {"partial_products_weight": -0.1}))


def test_off_the_built_state_is_todays():
  config = config_files.load(config_files.TINY_CONFIG)
  built, state = experiment.build(config, total_steps=10)
  assert state.head_params is None and built.partial_products_digits == 0
  on, state_on = experiment.build(config_files.set_fields(
      config_files.load(config_files.TINY_CONFIG), {"partial_products_weight": 0.1}), 10)
  assert on.partial_products_digits == DIGITS and state_on.head_params is not None
  # The model's parameters are the same either way (the head has its own seed).
  for a, b in zip(leaves(state.params), leaves(state_on.params), strict=True):
    np.testing.assert_array_equal(a, b)
  assert on.num_params == built.num_params


# ---------------------------------------------------------------------------
# The batch over several devices, and a tiny run.


@pytest.mark.slow
def test_the_targets_shard_like_the_batch_and_two_devices_give_one_devices_step(tmp_path):
  out = tmp_path / "two.npz"
  env = dict(os.environ, XLA_FLAGS=(f"{os.environ.get('XLA_FLAGS', '')} "
                                    "--xla_force_host_platform_device_count=2").strip())
  forked_python.run([sys.executable, os.path.join(REPO, "tests", "partial_products_step.py"),
                  str(out)], cwd=REPO, env=env, check=True, timeout=300)
  sys.path.insert(0, os.path.join(REPO, "tests"))
  try:
    import partial_products_step  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  one, two = partial_products_step.run(), dict(np.load(out))
  assert two["devices"] == 2 and one["devices"] == 1
  for name in ("loss_sum", "partial_products_loss_sum", "partial_products_slots", "grad_norm"):
    np.testing.assert_allclose(one[name], two[name], rtol=1e-4, err_msg=name)


@pytest.mark.slow
def test_a_tiny_run_logs_the_loss_checkpoints_the_head_and_exports_the_model_alone(
    tmp_path, data_dir):
  config = config_files.tiny(data_dir, generated_size=2000, max_steps=4, log_every_steps=2,
                             partial_products_weight=0.1)
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  scalars = read_scalars(str(workdir))
  losses = [value for _, value in scalars["train/partial_products_loss"]]
  assert len(losses) == 2 and all(np.isfinite(losses))
  assert all(0 <= value <= 1 for _, value in scalars["train/partial_products_accuracy"])
  assert "val/partial_products_loss" not in scalars
  state = read_arrays(workdir / "checkpoints" / "4" / "state")
  assert steps.HEAD_PARAMS_FIELD in state
  folder = tmp_path / "exported"
  assert cli.run("export", config_files.set_fields(config_files.tiny(data_dir),
                                                   {"export.dir": str(folder)}),
                 str(workdir)) == 0
  exported = read_arrays(folder / "params")
  assert jax.tree.structure(exported) == jax.tree.structure(state["params"])
  # Resuming without the head is refused before anything is read.
  off = config_files.tiny(data_dir, generated_size=2000, max_steps=6)
  with pytest.raises(checkpoints.CheckpointError,
                     match="resume with partial_products_weight > 0"):
    train.train_and_evaluate(off, str(workdir))
