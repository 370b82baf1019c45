"""Runs a federated experiment from a config.

  python -m experiments.main --config=configs/default.py --workdir=/tmp/demo \
      [--config.rounds=50 --config.aggregator.name=compression ...]

A user mistake ends the run with one `error:` line naming the problem and the fix, and
exit status 1 (2 for a bad command line); Ctrl-C says where the run will resume from
and exits 130. The training code (JAX, TensorFlow for TensorBoard) is imported only
after the command line is read, so `--help` and flag errors answer at once.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from experiments import cli, overrides
from experiments.cli import INTERRUPTED, USAGE_ERROR, fail

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "config",
  "configs/default.py",
  "Config file defining get_config(); override keys with "
  "--config.KEY=VALUE, component arguments with "
  "--config.COMPONENT.ARGUMENT=VALUE, a whole component with "
  "--config.COMPONENT='NAME(ARGUMENT=VALUE, ...)'.",
)
flags.DEFINE_string(
  "workdir",
  None,
  "Directory for metrics.jsonl, TensorBoard events, "
  "config.json and checkpoints; running again with it resumes.",
)
flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Continue the run in --workdir with a changed config (the earlier config "
  "and metrics are kept beside the new ones).",
)
flags.DEFINE_bool(
  "restart",
  False,
  "Move an earlier run in --workdir to WORKDIR.previous-N (nothing is deleted) and start over.",
)

_config_overrides: list[tuple[str, str]] = []
parse_flags = cli.flags_parser(_config_overrides)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(
      f"unexpected arguments {argv[1:]}: flags are --config=FILE, --config.KEY=VALUE, "
      f"--workdir=DIR (see --help).",
      USAGE_ERROR,
    )
  if not FLAGS.workdir:
    fail("--workdir is required: pass --workdir=DIR, a folder for this run's results.", USAGE_ERROR)
  if not FLAGS["verbosity"].present:
    # The console is for the progress line; library INFO logs (orbax, XLA) need --verbosity=0.
    logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines
  try:
    config = overrides.load(FLAGS.config, _config_overrides)
    from experiments import train  # pylint: disable=import-outside-toplevel  # JAX: slow

    train.train_and_evaluate(
      config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change, restart=FLAGS.restart
    )
  except overrides.OverrideError as e:
    fail(e, USAGE_ERROR)
  except KeyboardInterrupt:
    fail(
      "interrupted before training began: running the same command again starts (or "
      "resumes) the run.",
      INTERRUPTED,
    )
  except Exception as e:  # pylint: disable=broad-except  # sorted by cli.exit_for
    cli.exit_for(e)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
