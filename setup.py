"""fedjax_compress: communication-efficient federated learning in JAX/Flax."""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(
  r'__version__ = "([^"]+)"',
  (Path(__file__).parent / "fedjax_compress" / "__init__.py").read_text(),
)[1]

setup(
  name="fedjax_compress",
  version=VERSION,
  description="Federated learning with composable compression and exact bit accounting, in JAX.",
  long_description=(Path(__file__).parent / "README.md").read_text(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  packages=find_packages(include=["fedjax_compress", "fedjax_compress.*"]),
  python_requires=">=3.11",
  install_requires=[
    "jax>=0.5.0,<0.13",
    "flax>=0.10.4,<0.13",
    "optax>=0.2.4,<0.3",
    "numpy>=1.26,<3",
    "absl-py>=2.0,<3",
    "ml_collections>=1.0,<2",
    "clu>=0.0.12,<0.1",
    # clu's TensorBoard writer needs TensorFlow and TensorBoard.
    "tensorflow-cpu>=2.16,<2.22; sys_platform == 'linux'",
    "tensorflow>=2.16,<2.22; sys_platform != 'linux'",
    "tensorboard>=2.16,<2.22",
    "scikit-learn>=1.4,<2",  # ships the embedded default dataset
    "h5py>=3.10,<4",
    "orbax-checkpoint>=0.11,<0.13",  # checkpoints of runs
    "tqdm>=4.66,<5",
    "dp-accounting>=0.6,<0.7",  # privacy accounting; 0.4-0.5 need absl-py<2
  ],
  extras_require={
    "test": [
      "pytest>=8,<10",
      "pytest-xdist>=3.5,<4",
      "hypothesis>=6.100,<7",
      "scipy>=1.12,<2",
      "ruff>=0.17,<0.18",  # `make test` lints first
      "mypy>=1.10,<3",  # and type-checks (mypy.ini)
      # tests/data/test_tfds_source.py, tests/experiments/test_plot.py and test_notebook.py (runs the notebook)
      "tensorflow-datasets>=4.9.4,<5",
      "matplotlib>=3.8,<4",
      "nbclient>=0.10,<0.12",
      "nbformat>=5.10,<6",
      "ipykernel>=6.29,<8",
    ],
    # tfds:NAME sources (fedjax_compress.data.tfds_source).
    "tfds": ["tensorflow-datasets>=4.9.4,<5"],
    # python -m experiments.plot
    "plot": ["matplotlib>=3.8,<4"],
    # notebooks/colab_tpu.ipynb in a local Jupyter (Colab has these already).
    "notebook": [
      "notebook>=7,<8",
      "ipykernel>=6.29,<8",
      "ipython>=8.18,<10",
      "matplotlib>=3.8,<4",
      "tensorflow-datasets>=4.9.4,<5",
    ],
  },
)
