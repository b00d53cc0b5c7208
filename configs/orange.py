"""Orange: red (configs/default.py) with batch 256."""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 256
  return config
