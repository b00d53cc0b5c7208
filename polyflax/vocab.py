"""Tokenizer and vocabulary for `factored=expanded` polynomial lines.

Each side of a data line (for example `(21-t)*(-6*t-4)` or
`20*tan(i)**2-70*tan(i)`) is split into tokens greedily from left to right:

* `sin`, `cos` and `tan` are single tokens (tried before single letters),
* `**` is a single token (tried before `*`),
* every other character is a token of its own (each digit separately).

Characters outside the vocabulary still tokenize (as one-character tokens)
and are encoded as the unk id, which decodes to `?`.

Ids of the default vocabulary (`Vocab.default()`):

  0 `<pad>`, 1 `<bos>`, 2 `<eos>`, 3 `<unk>`,
  4..13   digits `0`..`9`,
  14..26  variables `a c h i j k n o s t x y z`,
  27..29  `sin cos tan`,
  30..35  `( ) + - * **`.

Digit order (`digit_order`). With "printed" the model reads and writes
numbers as they are printed. With "reversed" every run of digit tokens is
reversed inside the model, so numbers go least significant digit first,
the order in which carries flow: `-122*t` is encoded as the tokens of
`-221*t`. The transform is its own inverse and keeps every token in place
but the digits of a run, so `encode` applies it and `decode` undoes it and
the text in and out is exactly the printed text.

A vocabulary is stored as JSON: a list of its token strings, in id order,
starting with the four specials; a vocabulary whose digits are reversed is
stored as {"tokens": [...], "digit_order": "reversed"}.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# Ids of the special tokens in every vocabulary (they come first, in this
# order). The model, the decoder and the input pipeline read them from here.
PAD_ID, BOS_ID, EOS_ID, UNK_ID = (SPECIAL_TOKENS.index(token) for token in SPECIAL_TOKENS)

DIGITS = tuple("0123456789")
VARIABLES = tuple("achijknostxyz")
FUNCTIONS = ("sin", "cos", "tan")
OPERATORS = ("(", ")", "+", "-", "*", "**")
DATA_TOKENS = DIGITS + VARIABLES + FUNCTIONS + OPERATORS

# How the model sees numbers (see the module docstring): as printed, or each
# run of digits reversed (least significant digit first).
DIGIT_ORDERS = ("printed", "reversed")

# What `decode` prints for the unk id.
UNK_MARKER = "?"

# Greedy left-to-right: the alternation is tried in order at each position.
_TOKEN_PATTERN = re.compile(r"sin|cos|tan|\*\*|.", re.DOTALL)


def tokenize(text: str) -> list[str]:
  """Splits `text` into tokens; `detokenize` joins them back exactly."""
  return _TOKEN_PATTERN.findall(text)


def detokenize(tokens: Iterable[str]) -> str:
  """Joins tokens back into text (the inverse of `tokenize`)."""
  return "".join(tokens)


def reverse_digit_runs(ids: np.ndarray, is_digit: np.ndarray) -> np.ndarray:
  """`ids` with every run of digit ids reversed, along the last axis.

  Args:
    ids: integer ids of any shape; runs never cross from one row (last axis)
      to the next.
    is_digit: bool per id of the vocabulary, True for the digit tokens; ids
      outside it count as non-digits.

  The result has the same shape and dtype; applied twice it gives `ids` back.
  """
  ids = np.asarray(ids)
  if ids.size == 0:
    return ids.copy()
  rows = ids.reshape(-1, ids.shape[-1])
  in_range = (rows >= 0) & (rows < is_digit.size)
  digit = np.zeros(rows.shape, dtype=bool)
  digit[in_range] = is_digit[rows[in_range]]
  # A column of non-digits after each row keeps runs inside their rows.
  digit = np.pad(digit, ((0, 0), (0, 1))).reshape(-1)
  positions = np.arange(digit.size)
  starts = digit.copy()
  starts[1:] &= ~digit[:-1]
  ends = digit.copy()
  ends[:-1] &= ~digit[1:]
  run_start = np.maximum.accumulate(np.where(starts, positions, 0))
  run_end = np.minimum.accumulate(np.where(ends, positions, digit.size)[::-1])[::-1]
  source = np.where(digit, run_start + run_end - positions, positions)
  width = rows.shape[1] + 1
  source = source.reshape(rows.shape[0], width)[:, :-1]
  source = source - (np.arange(rows.shape[0]) * width)[:, None]
  return np.take_along_axis(rows, source, axis=1).reshape(ids.shape)


def _validate_tokens(tokens: Sequence[object]) -> tuple[str, ...]:
  """Checks a token list; returns it as a tuple or raises ValueError."""
  if not isinstance(tokens, (list, tuple)):
    raise ValueError(
        f"a vocabulary is a list of token strings, got {type(tokens).__name__}")
  if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
    raise ValueError(
        f"a vocabulary must start with the specials {list(SPECIAL_TOKENS)}, "
        f"got {list(tokens[:len(SPECIAL_TOKENS)])}")
  seen = set()
  for token in tokens:
    if not isinstance(token, str) or not token:
      raise ValueError(f"vocabulary tokens must be non-empty strings, got {token!r}")
    if token in seen:
      raise ValueError(f"duplicate vocabulary token {token!r}")
    seen.add(token)
  for token in tokens[len(SPECIAL_TOKENS):]:
    if token in SPECIAL_TOKENS or tokenize(token) != [token]:
      raise ValueError(f"{token!r} is not a single token of the tokenizer")
  return tuple(tokens)


class Vocab:
  """Maps tokens to ids and back.

  Attributes:
    tokens: the token strings in id order (specials first).
    digit_order: "printed" or "reversed" (see the module docstring).
    pad_id, bos_id, eos_id, unk_id: ids of the special tokens (0, 1, 2, 3).
    size: number of tokens, specials included.
  """

  def __init__(self, tokens: Sequence[str], digit_order: str = "printed"):
    """Builds a vocabulary from its token list (specials first, in order).

    Raises:
      ValueError: if a token is invalid, or `digit_order` is not one of `DIGIT_ORDERS`.
    """
    self.tokens = _validate_tokens(tokens)
    if digit_order not in DIGIT_ORDERS:
      raise ValueError(f"digit_order must be one of {', '.join(map(repr, DIGIT_ORDERS))}, "
                       f"not {digit_order!r}")
    self.digit_order = digit_order
    self._is_digit = np.array([token in DIGITS for token in self.tokens], dtype=bool)
    self.pad_id, self.bos_id, self.eos_id, self.unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    self._token_to_id = {token: i for i, token in enumerate(self.tokens)}
    # Text printed for each id by `decode`: specials other than unk print
    # nothing (decode skips them anyway), unk prints a visible marker.
    self._id_to_text = list(self.tokens)
    self._id_to_text[self.pad_id] = ""
    self._id_to_text[self.bos_id] = ""
    self._id_to_text[self.eos_id] = ""
    self._id_to_text[self.unk_id] = UNK_MARKER
    # Lookup tables for the vectorised `encode_batch`.
    self._char_to_id = np.full(256, self.unk_id, dtype=np.int32)
    self._wide_char_ids = {}
    for token, token_id in self._token_to_id.items():
      if len(token) == 1 and ord(token) < 256:
        self._char_to_id[ord(token)] = token_id
      elif len(token) == 1:
        self._wide_char_ids[ord(token)] = token_id
    self._multi_char_ids = {
        token: self._token_to_id.get(token, self.unk_id)
        for token in FUNCTIONS + ("**",)}

  @classmethod
  def default(cls, digit_order: str = "printed") -> Vocab:
    """The standard vocabulary: specials, digits, variables, functions, operators."""
    return cls(SPECIAL_TOKENS + DATA_TOKENS, digit_order)

  @property
  def size(self) -> int:
    return len(self.tokens)

  def __len__(self) -> int:
    return len(self.tokens)

  def __eq__(self, other: object) -> bool:
    return (isinstance(other, Vocab) and self.tokens == other.tokens
            and self.digit_order == other.digit_order)

  def __hash__(self) -> int:
    return hash((self.tokens, self.digit_order))

  def __repr__(self) -> str:
    return f"Vocab(size={self.size}, digit_order={self.digit_order!r})"

  def _model_order(self, ids: np.ndarray) -> np.ndarray:
    """Printed order <-> the model's order (the transform is its own inverse)."""
    if self.digit_order == "reversed":
      return reverse_digit_runs(ids, self._is_digit)
    return ids

  # --- Single texts. ---

  def encode(self, text: str, add_eos: bool = True) -> list[int]:
    """Token ids of `text`, with the eos id appended unless `add_eos` is False."""
    ids = [self._token_to_id.get(token, self.unk_id) for token in tokenize(text)]
    if self.digit_order == "reversed" and ids:
      ids = self._model_order(np.asarray(ids)).tolist()
    if add_eos:
      ids.append(self.eos_id)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`: stops at the first eos, skips pad and bos, unk prints `?`.

    Raises:
      ValueError: if an id is outside the vocabulary.
    """
    return self._text(self._model_order(np.asarray(ids, dtype=np.int64).reshape(-1)).tolist())

  def _text(self, printed_ids: list[int]) -> str:
    """`decode` of ids already in the printed order."""
    pieces, size, eos_id, id_to_text = [], self.size, self.eos_id, self._id_to_text
    for token_id in printed_ids:
      if token_id == eos_id:
        break
      if not 0 <= token_id < size:
        raise ValueError(f"token id {token_id} is outside the vocabulary of size {size}")
      pieces.append(id_to_text[token_id])
    return "".join(pieces)

  # --- Batches. ---

  def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """Encodes texts into an int32 array [len(texts), max_len].

    Each row holds the token ids of one text followed by the eos id, padded
    with the pad id (0). The result equals stacking `encode(text)` rows; the
    encoding is vectorised over all characters at once.

    Raises:
      ValueError: naming the first text whose tokens plus eos exceed `max_len`.
    """
    texts = list(texts)
    num_texts = len(texts)
    if max_len < 1:
      raise ValueError(f"max_len must be at least 1, got {max_len}")
    out = np.zeros((num_texts, max_len), dtype=np.int32)
    if not num_texts:
      return out
    joined = "".join(texts)
    num_chars = len(joined)
    # Positions fit int32 unless the batch is huge.
    index_dtype = np.int32 if max(num_chars, out.size) < 2**31 - 1 else np.int64
    text_lengths = np.fromiter(map(len, texts), dtype=index_dtype, count=num_texts)
    text_ends = np.cumsum(text_lengths)
    text_begins = text_ends - text_lengths
    if joined.isascii():
      chars = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
      token_ids = self._char_to_id[chars]
    else:
      # One code point per character, so positions match string indices.
      chars = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
      token_ids = self._char_to_id[np.minimum(chars, 255)]
      token_ids[chars > 255] = self.unk_id
      for code_point, token_id in self._wide_char_ids.items():
        token_ids[chars == code_point] = token_id

    # continues[i]: char i + 1 exists and belongs to the same text as char i.
    continues = np.ones(num_chars, dtype=bool)
    continues[text_ends[text_lengths > 0] - 1] = False

    def followed_by(letters: str) -> np.ndarray:
      """Where `letters` start at char i, inside one text."""
      found = np.ones(num_chars, dtype=bool)
      for offset, letter in enumerate(letters):
        found[:num_chars - offset] &= chars[offset:] == ord(letter)
        found[num_chars - offset:] = False
        if offset + 1 < len(letters):
          found[:num_chars - offset] &= continues[offset:]
      return found

    starts_token = np.ones(num_chars, dtype=bool)
    # Greedy sin/cos/tan. The only way two of these words overlap is `cosin`,
    # where `cos` wins and takes the `s`.
    function_starts = {word: followed_by(word) for word in FUNCTIONS}
    function_starts["sin"][2:] &= ~function_starts["cos"][:-2]
    for word, found in function_starts.items():
      token_ids[found] = self._multi_char_ids[word]
      for offset in range(1, len(word)):
        starts_token[offset:] &= ~found[:-offset]
    # Greedy `**`: a pair may start wherever two stars follow each other; in
    # longer runs of stars (never in the data) pairs start at even offsets.
    double_star = followed_by("**")
    if (double_star[1:] & double_star[:-1]).any():
      double_star = self._resolve_star_runs(double_star, chars, continues)
    token_ids[double_star] = self._multi_char_ids["**"]
    starts_token[1:] &= ~double_star[:-1]

    # Scatter the tokens into their rows.
    tokens_before = np.zeros(num_chars + 1, dtype=index_dtype)
    np.cumsum(starts_token, out=tokens_before[1:])
    tokens_per_text = tokens_before[text_ends] - tokens_before[text_begins]
    too_long = np.flatnonzero(tokens_per_text >= max_len)
    if too_long.size:
      first = int(too_long[0])
      raise ValueError(
          f"text {texts[first]!r} (index {first}) has {tokens_per_text[first]} tokens, "
          f"which with eos exceed max_len={max_len} ({too_long.size} texts too long)")
    # Flat position of token t of row r: r * max_len + (t - first token of r).
    row_begins = np.arange(num_texts, dtype=index_dtype) * max_len
    flat_positions = np.repeat(row_begins - tokens_before[text_begins], tokens_per_text)
    flat_positions += np.arange(flat_positions.size, dtype=index_dtype)
    flat_out = out.reshape(-1)
    flat_out[flat_positions] = token_ids[starts_token]
    flat_out[row_begins + tokens_per_text] = self.eos_id
    return self._model_order(out)

  @staticmethod
  def _resolve_star_runs(
      pair_candidates: np.ndarray, chars: np.ndarray, continues: np.ndarray) -> np.ndarray:
    """Keeps the `**` starts at even offsets of every run of stars."""
    is_star = chars == ord("*")
    run_start = is_star.copy()
    run_start[1:] &= ~(is_star[:-1] & continues[:-1])
    positions = np.arange(chars.size, dtype=np.int64)
    last_run_start = np.maximum.accumulate(np.where(run_start, positions, 0))
    return pair_candidates & ((positions - last_run_start) % 2 == 0)

  def decode_batch(self, ids: np.ndarray) -> list[str]:
    """`decode` of every row of a 2-D array of ids."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f"decode_batch expects a 2-D array of ids, got shape {ids.shape}")
    # The digit order of all rows at once (runs never cross rows), then each row's text.
    return [self._text(row) for row in self._model_order(ids.astype(np.int64)).tolist()]

  # --- Serialisation. ---

  def to_json(self) -> str:
    """The vocabulary as JSON: the list of tokens in id order, and the digit order if reversed."""
    if self.digit_order == "printed":
      return json.dumps(list(self.tokens))
    return json.dumps({"tokens": list(self.tokens), "digit_order": self.digit_order})

  @classmethod
  def from_json(cls, text: str, source: str = "<string>") -> Vocab:
    """Parses `to_json` output; `source` names the origin in error messages.

    Raises:
      ValueError: if `text` is not JSON describing a valid vocabulary.
    """
    try:
      tokens = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{source} is not valid JSON: {e}") from e
    digit_order = "printed"
    if isinstance(tokens, dict):
      digit_order = tokens.get("digit_order", "printed")
      tokens = tokens.get("tokens")
    try:
      return cls(tokens, digit_order)
    except ValueError as e:
      raise ValueError(f"{source} does not describe a valid vocabulary: {e}") from e

  @classmethod
  def load(cls, path: str | os.PathLike) -> Vocab:
    """Reads a vocabulary file: `to_json()` output, as a run's `vocab.json` holds it.

    Raises:
      ValueError: naming `path` if it does not hold a valid vocabulary.
    """
    with open(path, encoding="utf-8") as f:
      text = f.read()
    return cls.from_json(text, source=os.fspath(path))

