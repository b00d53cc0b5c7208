"""Reading checkpoint folders straight from their files, as NumPy arrays (tests only)."""

import jax
import numpy as np
import orbax.checkpoint as ocp


def read_arrays(item_dir):
  """The pytree of an Orbax item folder (e.g. `<step>/state`, an exported `params/`), as NumPy.

  Restoring as NumPy on the host needs no target shardings (Orbax otherwise
  warns that it falls back to the shardings saved in the files).
  """
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(str(item_dir)).item_metadata
  tree = getattr(metadata, "tree", metadata)
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(str(item_dir), args=ocp.args.PyTreeRestore(restore_args=as_numpy))
