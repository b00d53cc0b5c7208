"""The error of a checkpoint that cannot be used, importable without Orbax.

`CheckpointError` is what reading or writing a checkpoint, a run's files or an
exported folder raises, as one line naming the path and what is wrong; `one_line`
turns the many-line messages of Orbax and TensorStore into such a line.
checkpoints.py, which holds the Orbax code, raises both under its own name
(`checkpoints.CheckpointError`); code that only checks what a checkpoint
records (model_setup.py) raises them from here, without loading Orbax.
"""

from __future__ import annotations


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used, with the path and what is wrong."""


def one_line(error: BaseException) -> str:
  """The message of `error` and its causes on one line.

  Orbax and TensorStore messages span many lines (whole TensorStore specs);
  the spec is left out and the innermost cause, which says what is wrong with
  which file, is kept.
  """
  texts = []
  while error is not None and len(texts) < 4:
    text = " ".join(str(error).split()).split(" See full TensorStore details")[0]
    text = text if len(text) <= 400 else text[:400] + " ..."
    if text and text not in texts:
      texts.append(text)
    error = error.__cause__ or error.__context__
  return ": ".join(texts) or "unknown error"
