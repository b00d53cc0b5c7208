"""Red: the reference's hyperparameters (batch 512, 10 epochs).

3+3-layer Transformer, hidden 256, 8 heads, feed-forward 512, dropout 0.1,
validation every 0.2 epoch, gradient clipping at 1, bf16 compute on a GPU.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # --- data ---------------------------------------------------------------
  # Folder of the splits (train_set.txt, val_set.txt, test_set.txt). Its source
  # is inputs/train.txt when present, else a generated inputs/dataset.txt.
  config.data_dir = "inputs"
  # Lines generated when no source file exists (the original has 1,000,000).
  config.generated_size = 1_000_000
  # Seed of the generated data and of the 80/20 and 95/5 splits.
  config.data_seed = 0
  # Stop at the first malformed line (False) or skip and count them (True).
  config.skip_bad_lines = False
  # Longest token sequence, eos included (sides have at most 29 characters).
  config.max_len = 32
  # Examples are padded to the first of these lengths that holds both sides:
  # one compiled shape per bucket. The last must be at least max_len.
  config.length_buckets = (12, 16, 20, 32)
  # Training examples: 'split' reads the fixed train split (760,000 lines of
  # the 1M-line file, every epoch the same); 'generated' generates fresh lines
  # every epoch, seeded by (data_seed, epoch), so the run can be resumed. The
  # validation and test splits are the fixed splits either way.
  config.train_data = "split"
  # 'generated' only: lines per epoch; 0: as many as the train split holds.
  config.generated_examples_per_epoch = 0

  # --- model ---------------------------------------------------------------
  config.model = ml_collections.ConfigDict()
  config.model.hidden_dim = 256
  config.model.num_heads = 8
  config.model.encoder_layers = 3
  config.model.decoder_layers = 3
  config.model.encoder_ff_dim = 512
  config.model.decoder_ff_dim = 512
  config.model.dropout_rate = 0.1
  config.model.attention_dropout_rate = 0.1
  # Layer norm before each sublayer (True) or after the residual (False).
  config.model.pre_norm = True
  # 'auto': bfloat16 matrix products on a GPU/TPU, float32 on the CPU.
  # Parameters, softmax and the loss are always float32.
  config.compute_dtype = "auto"
  # The original task caps models at 5M parameters; raise only on purpose.
  config.max_params = 5_000_000
  config.allow_over_max_params = False

  # --- optimisation --------------------------------------------------------
  config.seed = 0
  # Examples per batch. constant_per_batch='examples': every batch holds
  # batch_size examples, as the reference's did (512 for red, so about 1,480
  # steps per epoch on the 760,000-line split, as the reference's 1,485);
  # 'tokens': batch_size is the batch of the longest bucket and shorter
  # buckets hold more (fewer steps per epoch, more examples per step).
  config.batch_size = 512
  config.constant_per_batch = "examples"
  config.max_epochs = 10
  # Stop after this many steps (the schedule ends there); 0: max_epochs.
  config.max_steps = 0
  config.learning_rate = 1e-3
  config.warmup_steps = 1000
  config.lr_schedule = "cosine"  # 'cosine' or 'rsqrt'
  config.lr_final_fraction = 0.0  # cosine only: final lr / peak lr
  config.weight_decay = 0.01
  config.adam_b1 = 0.9
  config.adam_b2 = 0.98
  config.adam_eps = 1e-9
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.0
  # A step whose loss is NaN/inf stops training (False) or is skipped and
  # counted in the logs as train/skipped_steps (True).
  config.skip_nonfinite_steps = False

  # --- validation, logging, checkpoints ------------------------------------
  # Validate (and checkpoint) every this fraction of an epoch.
  config.val_check_interval = 0.2
  # Examples of the validation split decoded greedily for exact match.
  config.val_exact_match_examples = 2048
  config.eval_batch_size = 1024
  config.log_every_steps = 50
  config.checkpoints_to_keep = 3
  # One training and one validation batch; nothing written (a smoke test).
  config.fast_dev_run = False

  # --- evaluation (--mode=evaluate) ------------------------------------------
  config.eval = ml_collections.ConfigDict()
  # '': the test split of the run's data folder (data_dir of its config.json).
  config.eval.test_file = ""
  config.eval.limit = 0  # 0: every line
  config.eval.output_dir = ""  # '': WORKDIR/eval
  config.eval.batch_size = 4096
  config.eval.beam_size = 1  # 1: greedy
  config.eval.length_penalty = 0.6
  config.eval.examples_to_print = 5

  # --- export (--mode=export) -------------------------------------------------
  config.export = ml_collections.ConfigDict()
  # Folder of the exported model; '': WORKDIR/export.
  config.export.dir = ""

  # --- several hosts (JAX's distributed runtime) ----------------------------
  # batch_size stays the global batch size; see polyflax/distributed.py.
  config.distributed = ml_collections.ConfigDict()
  # 'auto': join when the fields below, JAX_COORDINATOR_ADDRESS, or a SLURM
  # (srun) / Open MPI launch of several processes ask for it; 'true'; 'false'.
  config.distributed.enabled = "auto"
  config.distributed.coordinator_address = ""  # host:port of process 0; '': detect
  config.distributed.num_processes = 0  # 0: detect
  config.distributed.process_id = -1  # -1: detect

  return config
