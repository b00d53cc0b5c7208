"""Tests of the tokenizer and vocabulary."""

import json

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from polyflax import fileio
from polyflax import vocab as vocab_lib
from polyflax.vocab import Vocab

# Characters that stress the greedy rules: parts of sin/cos/tan, runs of
# stars, characters outside the vocabulary (one of them beyond Latin-1).
_TRICKY_ALPHABET = "sincota*()+-0129xz =\n\u00e9\u20ac"


@pytest.fixture(scope="module")
def vocab():
  return Vocab.default()


def _encode_rows(vocab, texts, max_len):
  """Reference for `encode_batch`: `encode` row by row."""
  out = np.zeros((len(texts), max_len), dtype=np.int32)
  for row, text in enumerate(texts):
    ids = vocab.encode(text)
    out[row, :len(ids)] = ids
  return out


def test_special_ids(vocab):
  assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
  assert vocab.tokens[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")


def test_default_order_is_documented(vocab):
  assert vocab.size == len(vocab) == 36
  assert vocab.tokens[4:14] == tuple("0123456789")
  assert vocab.tokens[14:27] == tuple("achijknostxyz")
  assert vocab.tokens[27:] == ("sin", "cos", "tan", "(", ")", "+", "-", "*", "**")


@pytest.mark.parametrize("text, tokens", [
    ("(21-t)*(-6*t-4)",
     ["(", "2", "1", "-", "t", ")", "*", "(", "-", "6", "*", "t", "-", "4", ")"]),
    ("6*t**2-122*t", ["6", "*", "t", "**", "2", "-", "1", "2", "2", "*", "t"]),
    ("20*tan(i)**2", ["2", "0", "*", "tan", "(", "i", ")", "**", "2"]),
    ("cos(s)*sin(n)", ["cos", "(", "s", ")", "*", "sin", "(", "n", ")"]),
    ("***", ["**", "*"]),
    ("*****", ["**", "**", "*"]),
    ("cosin", ["cos", "i", "n"]),
    ("tansin", ["tan", "sin"]),
    ("si", ["s", "i"]),
    ("", []),
])
def test_tokenize_is_greedy(text, tokens):
  assert vocab_lib.tokenize(text) == tokens
  assert vocab_lib.detokenize(tokens) == text


@hypothesis.settings(deadline=None)
@hypothesis.given(st.text(alphabet=_TRICKY_ALPHABET, max_size=30))
def test_detokenize_inverts_tokenize(text):
  assert vocab_lib.detokenize(vocab_lib.tokenize(text)) == text


def test_real_lines_round_trip(vocab, real_dev_lines):
  sides = [line.split("=") for line in real_dev_lines]
  assert all(len(pair) == 2 for pair in sides)
  for side in zip(*sides):
    side = list(side)
    for text in side:
      ids = vocab.encode(text)
      assert ids[-1] == vocab.eos_id
      assert vocab.unk_id not in ids, text
      assert vocab.decode(ids) == text
    batch = vocab.encode_batch(side, 32)
    np.testing.assert_array_equal(batch, _encode_rows(vocab, side, 32))
    assert vocab.decode_batch(batch) == side


def test_encode_without_eos(vocab):
  ids = vocab.encode("x**2", add_eos=False)
  assert ids == [vocab.tokens.index("x"), vocab.tokens.index("**"), vocab.tokens.index("2")]


def test_unknown_characters(vocab):
  ids = vocab.encode("2*w+\u00e9=")
  assert ids == [vocab.tokens.index("2"), vocab.tokens.index("*"), vocab.unk_id,
                 vocab.tokens.index("+"), vocab.unk_id, vocab.unk_id, vocab.eos_id]
  assert vocab.decode(ids) == "2*?+??"
  np.testing.assert_array_equal(vocab.encode_batch(["2*w+\u00e9="], 8)[0], ids + [0])


def test_decode_stops_at_eos_and_skips_pad_and_bos(vocab):
  x, two = vocab.tokens.index("x"), vocab.tokens.index("2")
  ids = [vocab.bos_id, x, vocab.pad_id, two, vocab.eos_id, x, x]
  assert vocab.decode(ids) == "x2"
  assert vocab.decode(np.array(ids, dtype=np.int32)) == "x2"
  assert vocab.decode([]) == ""


def test_decode_rejects_ids_outside_vocab(vocab):
  with pytest.raises(ValueError, match="outside"):
    vocab.decode([4, vocab.size])
  with pytest.raises(ValueError, match="outside"):
    vocab.decode([-1])


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(st.text(alphabet=_TRICKY_ALPHABET, max_size=12), max_size=8))
def test_encode_batch_matches_encode(texts):
  # Neighbouring texts must not merge: `co` + `s...` or `*` + `*` across rows.
  vocab = Vocab.default()
  np.testing.assert_array_equal(vocab.encode_batch(texts, 14), _encode_rows(vocab, texts, 14))


def test_encode_batch_across_text_boundaries(vocab):
  texts = ["co", "s", "*", "*", "ta", "n", "", "sin", "cosin", "x***y", "*****"]
  np.testing.assert_array_equal(vocab.encode_batch(texts, 6), _encode_rows(vocab, texts, 6))


def test_encode_batch_shape_dtype_and_padding(vocab):
  batch = vocab.encode_batch(["x", "(x+1)**2"], 10)
  assert batch.shape == (2, 10) and batch.dtype == np.int32
  assert batch[0].tolist() == [vocab.tokens.index("x"), vocab.eos_id] + [0] * 8
  assert vocab.encode_batch([], 5).shape == (0, 5)


def test_encode_batch_too_long_names_the_text(vocab):
  assert vocab.encode_batch(["x**2"], 4).shape == (1, 4)  # 3 tokens + eos fit exactly
  with pytest.raises(ValueError, match=r"'x\*\*22'"):
    vocab.encode_batch(["x", "x**22", "y"], 4)


def test_encode_batch_with_partial_vocab():
  small = Vocab(vocab_lib.SPECIAL_TOKENS + ("x", "2", "*", "\u00e9", "\u20ac"))
  texts = ["x**2", "sin(x)*\u00e9", "\u20ac2"]
  np.testing.assert_array_equal(small.encode_batch(texts, 10), _encode_rows(small, texts, 10))
  assert small.encode("x**2") == [4, small.unk_id, 5, small.eos_id]  # no `**` token


def test_json_round_trip(vocab, tmp_path):
  assert json.loads(vocab.to_json()) == list(vocab.tokens)
  assert Vocab.from_json(vocab.to_json()) == vocab
  path = tmp_path / "vocab.json"
  fileio.write_text_atomic(path, vocab.to_json())  # as a run writes its vocab.json
  loaded = Vocab.load(path)
  assert loaded == vocab
  line = "(21-t)*(-6*t-4)"
  assert loaded.encode(line) == vocab.encode(line)


@pytest.mark.parametrize("content", [
    "not json",
    '{"tokens": ["<pad>"]}',
    '["0", "1"]',
    '["<pad>", "<bos>", "<eos>", "<unk>", "x", "x"]',
    '["<pad>", "<bos>", "<eos>", "<unk>", "x**"]',
    '["<pad>", "<bos>", "<eos>", "<unk>", 7]',
    '["<pad>", "<bos>", "<eos>", "<unk>", ""]',
])
def test_load_rejects_invalid_vocab(tmp_path, content):
  path = tmp_path / "bad_vocab.json"
  path.write_text(content)
  with pytest.raises(ValueError, match="bad_vocab.json"):
    Vocab.load(path)


# ---------------------------------------------------------------------------
# Digits least significant first inside the model (digit_order="reversed").


def test_reversed_digits_are_reversed_inside_the_model_and_printed_outside():
  reversed_vocab, printed = Vocab.default("reversed"), Vocab.default()
  text = "6*t**2-122*t-84"
  model_ids = reversed_vocab.encode(text)
  assert printed.decode(model_ids) == "6*t**2-221*t-48"  # what the model reads and writes
  assert reversed_vocab.decode(model_ids) == text
  rows = reversed_vocab.encode_batch([text, "(21-t)*(-6*t-4)", "100*x"], 20)
  assert printed.decode_batch(rows) == ["6*t**2-221*t-48", "(12-t)*(-6*t-4)", "001*x"]
  np.testing.assert_array_equal(rows, _encode_rows(reversed_vocab, [text, "(21-t)*(-6*t-4)",
                                                                    "100*x"], 20))


def test_reversed_digits_round_trip_every_real_line(real_dev_lines):
  reversed_vocab, printed = Vocab.default("reversed"), Vocab.default()
  sides = [side for line in real_dev_lines for side in line.split("=")]
  assert len(sides) >= 100_000
  model_ids = reversed_vocab.encode_batch(sides, 32)
  assert reversed_vocab.decode_batch(model_ids) == sides
  # Only the digits moved: the same tokens, and every multi-digit number differs.
  printed_ids = printed.encode_batch(sides, 32)
  np.testing.assert_array_equal(np.sort(model_ids, axis=1), np.sort(printed_ids, axis=1))
  changed = [side for side, a, b in zip(sides, model_ids, printed_ids) if (a != b).any()]
  assert len(changed) > len(sides) // 2


@hypothesis.settings(deadline=None)
@hypothesis.given(st.lists(st.lists(st.integers(-1, 40), min_size=1, max_size=12),
                           min_size=1, max_size=6))
def test_reversing_digit_runs_twice_gives_the_ids_back(rows):
  width = max(map(len, rows))
  ids = np.array([row + [0] * (width - len(row)) for row in rows])
  is_digit = np.array([token in vocab_lib.DIGITS for token in Vocab.default().tokens])
  once = vocab_lib.reverse_digit_runs(ids, is_digit)
  np.testing.assert_array_equal(vocab_lib.reverse_digit_runs(once, is_digit), ids)
  for row, out in zip(ids, once):  # each row is its own: runs never cross rows
    np.testing.assert_array_equal(vocab_lib.reverse_digit_runs(row[None], is_digit)[0], out)


def test_digit_order_is_stored_in_the_json_and_checked():
  reversed_vocab = Vocab.default("reversed")
  assert json.loads(reversed_vocab.to_json())["digit_order"] == "reversed"
  assert Vocab.from_json(reversed_vocab.to_json()) == reversed_vocab != Vocab.default()
  assert Vocab.from_json(Vocab.default().to_json()).digit_order == "printed"  # the list format
  with pytest.raises(ValueError, match="digit_order must be one of 'printed', 'reversed'"):
    Vocab.default("backwards")
