"""Tiny: trains for a few steps in seconds on a CPU (tests and smoke runs)."""

from configs import default


def get_config():
  config = default.get_config()
  # A small generated dataset of its own, so nothing waits for 1M lines.
  config.data_dir = "inputs/tiny"
  config.generated_size = 4000
  # One shape, so a smoke run compiles each step once.
  config.length_buckets = (32,)
  # A 22k-parameter model (1+1 layers, hidden 32): a step takes milliseconds.
  config.model.hidden_dim = 32
  config.model.num_heads = 4
  config.model.encoder_layers = 1
  config.model.decoder_layers = 1
  config.model.encoder_ff_dim = 64
  config.model.decoder_ff_dim = 64
  # float32 on every device: a smoke run checks the program, and bfloat16
  # would make its figures depend on the machine.
  config.compute_dtype = "float32"
  # Small batches and 2 epochs: enough steps to cross validations and
  # checkpoints, with a short warmup and a high peak to learn something.
  config.batch_size = 64
  config.max_epochs = 2
  config.warmup_steps = 10
  config.learning_rate = 3e-3
  # Two validations an epoch, on small samples, and frequent logs: the tests
  # check what a run writes at each of them.
  config.val_check_interval = 0.5
  config.val_exact_match_examples = 64
  config.eval_batch_size = 256
  config.log_every_steps = 5
  config.eval.batch_size = 256
  return config
