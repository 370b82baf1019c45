"""`python -m fedjax_compress.compression.check_stage SPEC [--dim=N --clients=N --seed=N]`."""

import sys

from fedjax_compress.compression.check_stage import main

sys.exit(main())
