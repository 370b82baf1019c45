"""fedjax_compress: communication-efficient federated learning in JAX/Flax."""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"',
                    (Path(__file__).parent / "fedjax_compress" / "__init__.py").read_text())[1]

setup(
    name="fedjax_compress",
    version=VERSION,
    description="Federated learning with composable compression and exact bit accounting, in JAX.",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
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
        "tqdm>=4.66,<5",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "hypothesis>=6.100,<7",
                 "scipy>=1.12,<2"],
    },
)
