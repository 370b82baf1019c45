"""Federated datasets as in-memory numpy arrays, one client per writer or shard."""

# --- sources: federated containers and loaders (data layer) -------------------
from fedjax_compress.data.embedded import load_embedded_digits
from fedjax_compress.data.federated import DataError, FederatedData
from fedjax_compress.data.leaf import load_leaf
from fedjax_compress.data.shakespeare import load_shakespeare
from fedjax_compress.data.sources import (
  SOURCE_NAMES,
  bind_dataset,
  dataset_registry,
  load_federated,
  register_dataset,
)
from fedjax_compress.data.tff_emnist import load_tff_emnist
from fedjax_compress.data.tfds_source import load_tfds  # imports TFDS only when called
from fedjax_compress.data.text import TokenIds
# --- end sources ----------------------------------------------------------------
