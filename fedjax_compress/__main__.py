"""`python -m fedjax_compress --version`: the installed version, and where to go next."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import fedjax_compress


def main(argv: Sequence[str] | None = None) -> int:
  """Prints the version for `python -m fedjax_compress --version`."""
  parser = argparse.ArgumentParser(
    prog="python -m fedjax_compress",
    description="fedjax_compress: communication-efficient federated learning in JAX/Flax.",
    epilog="Experiments: python -m experiments.main --config=configs/default.py "
    "--workdir=DIR (from a checkout); plots: python -m experiments.plot --workdirs=A,B --out=PREFIX.",
  )
  parser.add_argument(
    "--version", action="version", version=f"fedjax_compress {fedjax_compress.__version__}"
  )
  parser.parse_args(argv)
  parser.print_help()
  return 0


if __name__ == "__main__":
  sys.exit(main())
