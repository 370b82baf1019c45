"""Token ids for text tasks, and TFF's Shakespeare character preprocessing.

`TokenIds` is the contract between text loaders (Shakespeare, Stack Overflow) and
the sequence loss/metrics: which ids are padding, beginning/end of sequence and
out-of-vocabulary, and how many logits a model emits. Pad is always id 0 here.

Shakespeare preprocessing follows TensorFlow Federated's
`tff.simulation.baselines.shakespeare` (char_prediction_preprocessing.py, the
setup of Reddi et al. 2021), not FedJAX's variant:
  * the 86-character vocabulary of TFF's "Federated Learning for Text
    Generation" tutorial, `CHAR_VOCAB` below (FedJAX's
    `fedjax.datasets.shakespeare` uses the same string);
  * id layout (TFF `get_special_tokens`): pad 0, the characters 1..86 in
    CHAR_VOCAB order, OOV 87, BOS 88, EOS 89: 90 logits;
  * each snippet becomes [BOS] + ids + [EOS], padded with pad to a multiple of
    seq_len + 1 and cut into chunks of seq_len + 1; a chunk gives x = chunk[:-1],
    y = chunk[1:]. Snippets are not joined, so no chunk mixes two snippets.
FedJAX instead uses pad 0, BOS 1, EOS 2, characters 3..88, OOV 89 and joins a
client's snippets before splitting; the vocabulary size (90) is the same, but ids
and sequences differ, so numbers compare with TFF's and Reddi et al.'s runs.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class TokenIds(NamedTuple):
  """The special ids of a token vocabulary.

  Attributes:
    pad: padding id (always 0 in this package); never a target.
    bos: beginning-of-sequence id.
    eos: end-of-sequence id.
    oov: out-of-vocabulary ids (one or more buckets).
    vocab_size: the number of logits a model emits; every id is in [0, vocab_size).
  """

  pad: int
  bos: int
  eos: int
  oov: tuple[int, ...]
  vocab_size: int


# TFF's character vocabulary (tff.simulation.baselines.shakespeare.CHAR_VOCAB,
# from the "Federated Learning for Text Generation" tutorial); 86 distinct chars.
CHAR_VOCAB = (
  "dhlptx@DHLPTX $(,048cgkoswCGKOSW[_#'/37;?bfjnrvzBFJNRVZ\"&*.26:\naeimquyAEIMQUY]!%)-159\r"
)
SEQUENCE_LENGTH = 80  # McMahan et al. 2017; TFF's DEFAULT_SEQUENCE_LENGTH.


def tff_token_ids(num_words: int, num_oov_buckets: int = 1) -> TokenIds:
  """TFF's id layout for a vocabulary of `num_words` entries (TFF's Shakespeare and
  Stack Overflow `get_special_tokens`): pad 0, the words 1..num_words, then the OOV
  buckets, BOS and EOS; vocab_size = num_words + num_oov_buckets + 3 logits."""
  if num_words < 1 or num_oov_buckets < 1:
    raise ValueError(f"num_words={num_words} and num_oov_buckets={num_oov_buckets} must be >= 1.")
  after = num_words + num_oov_buckets
  return TokenIds(
    pad=0,
    bos=after + 1,
    eos=after + 2,
    oov=tuple(range(num_words + 1, after + 1)),
    vocab_size=after + 3,
  )


SHAKESPEARE_TOKENS = tff_token_ids(len(CHAR_VOCAB))  # pad 0, OOV 87, BOS 88, EOS 89; 90 ids


def _byte_table() -> np.ndarray:
  """Byte value -> id: the vocabulary at 1..86, every other byte OOV."""
  table = np.full(256, SHAKESPEARE_TOKENS.oov[0], np.int32)
  for i, ch in enumerate(CHAR_VOCAB.encode("ascii")):
    table[ch] = i + 1
  return table


_TABLE = _byte_table()
_CHAR_ID = {c: i + 1 for i, c in enumerate(CHAR_VOCAB)}


def to_ids(snippet: bytes | str) -> np.ndarray:
  """One snippet -> int32 ids [BOS, c_1, ..., c_n, EOS].

  Like TFF (`tf.strings.bytes_split`), characters are bytes: a str is encoded as
  UTF-8 first, and each byte outside CHAR_VOCAB (including each byte of a
  multi-byte character) becomes the OOV id.
  """
  data = snippet.encode("utf-8") if isinstance(snippet, str) else bytes(snippet)
  tokens = SHAKESPEARE_TOKENS
  ids = np.empty(len(data) + 2, np.int32)
  ids[0], ids[-1] = tokens.bos, tokens.eos
  ids[1:-1] = _TABLE[np.frombuffer(data, np.uint8)]
  return ids


def char_ids(chars: str) -> np.ndarray:
  """Text -> int32 ids, one per character (not per byte), no BOS/EOS: for LEAF's
  windows, whose length counts characters. Characters outside CHAR_VOCAB are OOV."""
  oov = SHAKESPEARE_TOKENS.oov[0]
  return np.fromiter((_CHAR_ID.get(c, oov) for c in chars), np.int32, len(chars))


def to_sequences(
  ids: np.ndarray, seq_len: int = SEQUENCE_LENGTH, pad: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Ids of one snippet -> (x, y) int32 [m, seq_len], m = ceil(len / (seq_len + 1)).

  The ids are padded with `pad` to a multiple of seq_len + 1 and cut into chunks
  of seq_len + 1; x is each chunk without its last id, y without its first.
  """
  if seq_len < 1:
    raise ValueError(f"seq_len={seq_len} must be a positive integer (TFF uses 80).")
  ids = np.asarray(ids, np.int32)
  width = seq_len + 1
  chunks = -(-len(ids) // width)
  padded: np.ndarray = np.full(chunks * width, pad, np.int32)
  padded[: len(ids)] = ids
  padded = padded.reshape(chunks, width)
  return padded[:, :-1].copy(), padded[:, 1:].copy()


def snippets_to_sequences(
  snippets: Sequence[bytes | str], seq_len: int = SEQUENCE_LENGTH
) -> tuple[np.ndarray, np.ndarray]:
  """A client's snippets -> stacked (x, y) int32 [m, seq_len], snippet by snippet."""
  pairs = [to_sequences(to_ids(s), seq_len, SHAKESPEARE_TOKENS.pad) for s in snippets]
  if not pairs:
    empty = np.zeros((0, seq_len), np.int32)
    return empty, empty.copy()
  return (np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs]))


def decode(ids: Sequence[int]) -> str:
  """Ids -> text for inspection: specials as <pad>, <bos>, <eos>, <oov>."""
  tokens = SHAKESPEARE_TOKENS
  names = {
    tokens.pad: "<pad>",
    tokens.bos: "<bos>",
    tokens.eos: "<eos>",
    **{o: "<oov>" for o in tokens.oov},
  }
  return "".join(names.get(int(i)) or CHAR_VOCAB[int(i) - 1] for i in ids)
