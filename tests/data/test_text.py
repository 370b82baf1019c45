"""Token ids and sequences (data/text.py): TFF's vocabularies and special ids, and the
cutting of snippets into fixed-length input and target sequences."""

import numpy as np
import pytest

from fedjax_compress.data import TokenIds, text
from fedjax_compress.data.text import CHAR_VOCAB, SHAKESPEARE_TOKENS as TOK

PAD, OOV, BOS, EOS = TOK.pad, TOK.oov[0], TOK.bos, TOK.eos


def test_vocabulary_and_special_ids_follow_tff():
  assert len(CHAR_VOCAB) == 86 and len(set(CHAR_VOCAB)) == 86
  assert CHAR_VOCAB[:6] == "dhlptx" and CHAR_VOCAB.endswith("159\r")
  assert TOK == TokenIds(pad=0, bos=88, eos=89, oov=(87,), vocab_size=90)
  assert text.tff_token_ids(10_000) == TokenIds(0, 10_002, 10_003, (10_001,), 10_004)
  with pytest.raises(ValueError, match="num_words"):
    text.tff_token_ids(0)


def test_to_ids_adds_bos_eos_and_maps_bytes_outside_the_vocabulary_to_oov():
  np.testing.assert_array_equal(text.to_ids(b"dh x"), [BOS, 1, 2, 14, 6, EOS])
  assert text.to_ids(b"~")[1] == OOV  # '~' is not in the vocabulary
  # As TFF splits bytes: a two-byte UTF-8 character is two OOV ids.
  np.testing.assert_array_equal(text.to_ids("é"), [BOS, OOV, OOV, EOS])
  assert text.decode(text.to_ids(b"To be~")) == "<bos>To be<oov><eos>"


def test_to_sequences_cuts_chunks_of_seq_len_plus_one_padded_with_pad():
  x, y = text.to_sequences(text.to_ids(b"dhlp"), seq_len=3)  # BOS d h l | p EOS pad pad
  np.testing.assert_array_equal(x, [[BOS, 1, 2], [4, EOS, PAD]])
  np.testing.assert_array_equal(y, [[1, 2, 3], [EOS, PAD, PAD]])
  x, y = text.to_sequences(text.to_ids(b"dh"), seq_len=3)  # exactly one chunk
  np.testing.assert_array_equal(x, [[BOS, 1, 2]])
  np.testing.assert_array_equal(y, [[1, 2, EOS]])
  x, _ = text.snippets_to_sequences([b"dh", b"dhlp"], seq_len=3)  # no chunk mixes snippets
  np.testing.assert_array_equal(x[:, 0], [BOS, BOS, 4])
  with pytest.raises(ValueError, match="seq_len=0"):
    text.to_sequences(np.arange(3), seq_len=0)
