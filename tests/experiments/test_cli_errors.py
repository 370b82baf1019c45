"""Bad invocations of experiments.main and experiments.sweep: one `error:` line each.

Each runs against a workdir holding a finished run: it must exit non-zero, print exactly
one non-empty stderr line starting with `error:`, no traceback, and leave every file of
that workdir byte for byte as it was. The `SUBPROCESS` cases run as a user would, one
process each; the others run one after another inside one fresh process (`_DRIVER`:
absl's flags reset between them), which pays JAX's import once instead of 40 times.
"""

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
  "--config.model=mlp",
  "--config.rounds=2",
  "--config.clients_per_round=3",
  "--config.eval_every=2",
  "--config.checkpoint_every=1",
]

# (id, module, arguments); WORKDIR, FILE and TMP are replaced per run.
BAD = [
  ("unknown_flag", "main", ["--workdir=WORKDIR", "--foo=1"]),
  ("missing_workdir", "main", []),
  ("positional_argument", "main", ["--workdir=WORKDIR", "extra"]),
  ("config_file_missing", "main", ["--workdir=WORKDIR", "--config=configs/nope.py"]),
  ("config_file_broken", "main", ["--workdir=WORKDIR", "--config=TMP/broken.py"]),
  ("config_file_without_get_config", "main", ["--workdir=WORKDIR", "--config=TMP/empty.py"]),
  ("unknown_key", "main", ["--workdir=WORKDIR", "--config.roundz=3"]),
  ("moved_key", "main", ["--workdir=WORKDIR", "--config.client_momentum=0.5"]),
  ("moved_stages_key", "main", ["--workdir=WORKDIR", "--config.stages=drive"]),
  ("override_without_value", "main", ["--workdir=WORKDIR", "--config.rounds"]),
  ("not_an_integer", "main", ["--workdir=WORKDIR", "--config.rounds=abc"]),
  ("zero_rounds", "main", ["--workdir=WORKDIR", "--config.rounds=0"]),
  ("negative_batch", "main", ["--workdir=WORKDIR", "--config.batch_size=-1"]),
  ("unknown_strategy", "main", ["--workdir=WORKDIR", "--config.strategy=fast"]),
  ("unknown_weighting", "main", ["--workdir=WORKDIR", "--config.client_weighting=both"]),
  ("unknown_accounting", "main", ["--workdir=WORKDIR", "--config.bit_accounting=tf"]),
  ("unknown_aggregator", "main", ["--workdir=WORKDIR", "--config.aggregator.name=median"]),
  ("unread_stages", "main", ["--workdir=WORKDIR", "--config.aggregator.stages=drive"]),
  (
    "unknown_stage_argument",
    "main",
    ["--workdir=WORKDIR", "--config.aggregator=encoded_mean(stages='uniform_quantize(bitz=2)')"],
  ),
  (
    "stage_argument_out_of_range",
    "main",
    ["--workdir=WORKDIR", "--config.aggregator=encoded_mean(stages='top_k(fraction=5.0)')"],
  ),
  (
    "float_stage_after_packing",
    "main",
    [
      "--workdir=WORKDIR",
      "--config.aggregator=encoded_mean(stages='uniform_quantize(bits=2),hadamard')",
    ],
  ),
  ("optimizer_typo", "main", ["--workdir=WORKDIR", "--config.client_optimizer.name=adamm"]),
  (
    "optimizer_argument_typo",
    "main",
    ["--workdir=WORKDIR", "--config.client_optimizer.momentumm=0.5"],
  ),
  ("optimizer_positional", "main", ["--workdir=WORKDIR", "--config.client_optimizer=adam(0.1)"]),
  ("no_client_optimizer", "main", ["--workdir=WORKDIR", "--config.client_optimizer=none"]),
  ("fed_sgd_with_optimizer", "main", ["--workdir=WORKDIR", "--config.fed_sgd=True"]),
  ("unknown_model", "main", ["--workdir=WORKDIR", "--config.model.name=resnet"]),
  ("unread_model_argument", "main", ["--workdir=WORKDIR", "--config.model.depth=3"]),
  ("run_set_model_argument", "main", ["--workdir=WORKDIR", "--config.model.num_classes=5"]),
  ("unread_data_argument", "main", ["--workdir=WORKDIR", "--config.data_dir=/tmp"]),
  ("leaf_without_data_dir", "main", ["--workdir=WORKDIR", "--config.data.name=leaf"]),
  (
    "leaf_missing_folder",
    "main",
    ["--workdir=WORKDIR", "--config.data.name=leaf", "--config.data.data_dir=/nonexistent"],
  ),
  ("unimportable_module", "main", ["--workdir=WORKDIR", "--config.imports=no_such_module"]),
  ("too_many_clients", "main", ["--workdir=WORKDIR", "--config.clients_per_round=1000"]),
  ("workdir_is_a_file", "main", ["--workdir=FILE"]),
  ("workdir_under_a_file", "main", ["--workdir=FILE/run"]),
  ("workdir_not_writable", "main", ["--workdir=/sys/fedjax_compress_run"]),  # root too
  (
    "resume_with_changed_config",
    "main",
    ["--workdir=WORKDIR", "--config.client_optimizer.learning_rate=0.5"],
  ),
  (
    "incompatible_resume_allowed",
    "main",  # finding 4
    [
      "--workdir=WORKDIR",
      "--config.aggregator.name=mean",
      "--allow_config_change",
      "--config.rounds=8",
    ],
  ),
  ("sweep_without_root", "sweep", ["--variant=a:rounds=1"]),
  ("sweep_without_variants", "sweep", ["--root=TMP/sweep"]),
  ("sweep_bad_variant", "sweep", ["--root=TMP/sweep", "--variant=a:rounds"]),
  ("sweep_unknown_key", "sweep", ["--root=TMP/sweep", "--variant=a:roundz=1"]),
  ("sweep_unread_key", "sweep", ["--root=TMP/sweep", "--variant=a:aggregator.stages=drive"]),
  ("sweep_unknown_flag", "sweep", ["--root=TMP/sweep", "--variant=a:rounds=1", "--bar"]),
]


# Run as real processes: flag parsing, the sweep, and finding 4 end to end.
SUBPROCESS = {
  "unknown_flag",
  "missing_workdir",
  "incompatible_resume_allowed",
  "workdir_not_writable",
  *(case[0] for case in BAD if case[1] == "sweep"),
}

# Runs experiments.main's parse_flags and main for each argument list read from stdin
# (JSON), and prints [exit status, stdout, stderr] per case as JSON.
_DRIVER = """
import contextlib, io, json, sys
from absl import flags
from experiments import main as cli
results = []
for arguments in json.load(sys.stdin):
  flags.FLAGS.unparse_flags()
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      cli.main(cli.parse_flags(["experiments.main", *arguments]))
      status = 0
    except SystemExit as e:
      status = e.code
    except BaseException as e:  # a traceback, as the command would print it
      import traceback
      traceback.print_exc()
      status = 1
  results.append([status, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def _sha(workdir):
  return {
    str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(Path(workdir).rglob("*"))
    if p.is_file()
  }


def _run(module, arguments, env):
  return subprocess.run(
    [sys.executable, "-m", f"experiments.{module}", *arguments],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  """Runs every bad invocation (two at a time) after one good run in WORKDIR."""
  tmp = tmp_path_factory.mktemp("cli")
  workdir, file = tmp / "run", tmp / "a_file"
  file.write_text("not a folder")
  (tmp / "broken.py").write_text("def get_config(:\n")
  (tmp / "empty.py").write_text("x = 1\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  good = _run("main", [f"--workdir={workdir}", "--config.aggregator.name=compression", *SMALL], env)
  assert good.returncode == 0, good.stderr
  before = _sha(workdir)

  def arguments_of(module, arguments):
    arguments = [
      a.replace("WORKDIR", str(workdir)).replace("FILE", str(file)).replace("TMP", str(tmp))
      for a in arguments
    ]
    if module == "main" and any(a.startswith("--workdir") for a in arguments):
      arguments = [*SMALL, "--config.aggregator.name=compression", *arguments]
    return arguments

  def one(case):
    name, module, arguments = case
    return name, _run(module, arguments_of(module, arguments), env)

  in_process = [case for case in BAD if case[0] not in SUBPROCESS]
  assert all(module == "main" for _, module, _ in in_process)
  driver = subprocess.run(
    [sys.executable, "-c", _DRIVER],
    cwd=ROOT,
    env=env,
    text=True,
    capture_output=True,
    timeout=900,
    input=json.dumps([arguments_of(m, a) for _, m, a in in_process]),
  )
  assert driver.returncode == 0, driver.stderr[-3000:]
  results = {
    name: subprocess.CompletedProcess([], status, out, err)
    for (name, _, _), (status, out, err) in zip(
      in_process, json.loads(driver.stdout.splitlines()[-1])
    )
  }
  with ThreadPoolExecutor(max_workers=2) as pool:
    results.update(pool.map(one, [case for case in BAD if case[0] in SUBPROCESS]))
  return results, before, _sha(workdir), file.read_text()


def test_there_are_at_least_30_bad_invocations():
  assert len(BAD) >= 30


@pytest.mark.slow
@pytest.mark.parametrize("name", [case[0] for case in BAD])
def test_a_bad_invocation_is_one_error_line(outcomes, name):
  results, _, _, _ = outcomes
  result = results[name]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode != 0, result.stdout
  assert "Traceback" not in result.stderr + result.stdout
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


@pytest.mark.slow
def test_no_bad_invocation_changed_the_existing_run(outcomes):
  _, before, after, file_text = outcomes
  assert after == before
  assert file_text == "not a folder"
