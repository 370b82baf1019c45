"""Runs a federated experiment from a config.

  python -m experiments.main --config=configs/default.py --workdir=/tmp/demo \
      [--config.rounds=50 ...]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for metrics.jsonl, TensorBoard events, config.")
flags.DEFINE_bool("allow_config_change", False,
                  "Resume a workdir whose run had a different config.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # The console is for the progress line; library INFO logs (orbax, XLA) need --verbosity=0.
    logging.set_verbosity(logging.WARNING)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                             allow_config_change=FLAGS.allow_config_change)
  except (train.ConfigError, train.NonFiniteModelError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(main)
