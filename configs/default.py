"""The reference's recipe, called red in its TensorBoard: batch 512, 10 epochs.

3+3-layer Transformer, hidden 256, 8 heads, feed-forward 512, dropout 0.1,
validation every 0.2 epoch, gradient clipping at 1, bf16 compute on a GPU.
Every other config starts from this one and says what it changes.
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
  # Digits inside the model: 'printed', or 'reversed' (least significant first,
  # the order carries flow in); text in and out is printed either way.
  config.digit_order = "printed"
  # Training lines: 'split', the fixed 760,000-line split every epoch; 'generated',
  # fresh lines seeded by (data_seed, epoch). Validation and test stay the splits.
  config.train_data = "split"
  # 'generated' only: lines per epoch; 0: as many as the train split holds.
  config.generated_examples_per_epoch = 0
  # 'generated' only: this fraction, in [0, 1), of each epoch's lines cancel their
  # linear term (`361-25*h**2`), the rows models fail most; 0: the data's share.
  config.generated_cancel_fraction = 0.0
  # 'generated' only: fractions of each epoch's lines whose linear coefficient
  # s = a*d+b*c nearly cancels (1 <= |s| <= 9: its sign goes wrong) or is at the
  # range's edge (|s| >= 300: its tens digit goes wrong), the rows the data holds
  # few of (polyflax/row_mix.py); 0: the data's share. All three sum below 1.
  config.generated_near_cancel_fraction = 0.0
  config.generated_edge_fraction = 0.0

  # --- model ---------------------------------------------------------------
  # The reference's shape: 3+3 layers of width 256 with 8 heads and
  # feed-forward 512, 3,961,600 parameters (under the task's 5M cap).
  config.model = ml_collections.ConfigDict()
  config.model.hidden_dim = 256
  config.model.num_heads = 8
  config.model.encoder_layers = 3
  config.model.decoder_layers = 3
  config.model.encoder_ff_dim = 512
  config.model.decoder_ff_dim = 512
  # Dropout 0.1 after each sublayer and on the attention weights, as the
  # reference: the fixed split repeats every epoch and could be memorised.
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
  # Seed of the parameters' initialisation, dropout and the batch order
  # (the data itself has data_seed).
  config.seed = 0
  # Examples per batch. constant_per_batch='examples': batch_size in every bucket,
  # as the reference; 'tokens': the longest bucket's, shorter ones hold more.
  config.batch_size = 512
  config.constant_per_batch = "examples"
  # Epochs of the train split, as the reference trained.
  config.max_epochs = 10
  # Stop after this many steps (the schedule ends there); 0: max_epochs.
  config.max_steps = 0
  # Peak learning rate, reached by a linear warmup over warmup_steps: Adam's
  # first moment estimates are noisy, so its first updates are kept small.
  config.learning_rate = 1e-3
  config.warmup_steps = 1000
  # Decay after the warmup: 'cosine' to lr_final_fraction of the peak at the
  # last step, or 'rsqrt' (1/sqrt(step), open-ended, for runs of no set length).
  config.lr_schedule = "cosine"
  config.lr_final_fraction = 0.0  # cosine only: final lr / peak lr
  # AdamW's decoupled weight decay: a light regulariser of the weights.
  config.weight_decay = 0.01
  # Adam's betas and epsilon of the original Transformer: b2=0.98 follows
  # changing gradient scales sooner than the usual 0.999.
  config.adam_b1 = 0.9
  config.adam_b2 = 0.98
  config.adam_eps = 1e-9
  # Global gradient norm clipped at this (the reference's); 0: no clipping.
  config.grad_clip_norm = 1.0
  # Probability mass spread over the other tokens of each target; 0: none,
  # since exact match rewards a confident argmax.
  config.label_smoothing = 0.0
  # Decay of a float32 moving average of the parameters, which then is the model
  # (smoothing the last updates' noise), e.g. 0.999; 0: off (docs/training.md).
  config.ema_decay = 0.0
  # A step whose loss is NaN/inf stops training (False) or is skipped and
  # counted in the logs as train/skipped_steps (True).
  config.skip_nonfinite_steps = False
  # Weight of an auxiliary loss added to the token loss: a training-only head
  # predicts the partial products a*d and b*c of (a*u+b)*(c*u+d), the parts of
  # the linear coefficient (polyflax/partial_products.py). 0: off, no head.
  config.partial_products_weight = 0.0

  # --- validation, logging, checkpoints ------------------------------------
  # Validate (and checkpoint) every this fraction of an epoch.
  config.val_check_interval = 0.2
  # Validate (and checkpoint) also every this many training examples while the
  # run has seen at most val_early_until_examples, besides val_check_interval:
  # an accuracy threshold crossed early is seen, not guessed. 0: off (both 0).
  config.val_early_every_examples = 0
  config.val_early_until_examples = 0
  # Examples of the validation split decoded greedily for exact match (a
  # fixed sample: the figure is comparable from one validation to the next).
  config.val_exact_match_examples = 2048
  # Examples per validation batch, teacher-forced and decoded (no gradients,
  # so larger than a training batch).
  config.eval_batch_size = 1024
  # Training scalars (loss, learning rate, examples/s) every this many steps.
  config.log_every_steps = 50
  # Latest checkpoints kept besides the best one (by validation loss).
  config.checkpoints_to_keep = 3
  # One training and one validation batch; nothing written (a smoke test).
  config.fast_dev_run = False

  # --- evaluation (--mode=evaluate) ------------------------------------------
  config.eval = ml_collections.ConfigDict()
  # '': the test split of the run's data folder (data_dir of its config.json).
  config.eval.test_file = ""
  config.eval.limit = 0  # first lines of the test file scored; 0: every line
  config.eval.output_dir = ""  # '': WORKDIR/eval (runs/eval/NAME for an exported folder)
  # Sequences decoded per batch (fewer when the test file is small); large,
  # since a decoding step of one sequence is cheap.
  config.eval.batch_size = 4096
  config.eval.beam_size = 1  # 1: greedy decoding; more: beam search of that width
  # Beam search only: alpha of the length penalty ((5 + length) / 6) ** alpha.
  config.eval.length_penalty = 0.6
  # Test rows printed with their prediction before the score, as the reference did.
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
