"""fedjax_compress: communication-efficient federated learning in JAX."""

__version__ = "0.1.0"
