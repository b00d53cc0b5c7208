"""Orange, beside red in TensorBoard: the reference's recipe (red) with batch 256."""

from configs import default


def get_config():
  config = default.get_config()
  # Half red's batch: twice the steps per epoch for the same examples, the
  # one difference to compare with red.
  config.batch_size = 256
  return config
