"""How long a user waits: `--help`, importing the trainer, and the first round's line.

  python -m benchmarks.startup [--repo=PATH] [--python=PATH] [--repeats=3] [--json=PATH]

For the checkout at --repo (default: this one), with --python (default: the repo's
.venv/bin/python, else this interpreter), cwd = the repo and JAX_PLATFORMS=cpu, each
measure --repeats times (after --warmup untimed runs of each, which also write the
repo's .pyc files):

- help: wall time of `python -m experiments.main --help`, to its exit;
- import: wall time of `python -c "import experiments.train"`, to its exit;
- first_round: from launching `python -u -m experiments.main --config=configs/default.py
  --workdir=<fresh temp dir> --config.rounds=1` to the first progress line it prints
  (`round     1/1  loss ...`), read line by line from its stdout;
- first_round_total: the same process, to its exit.

Also whether `--help` imports TensorFlow and JAX (`python -X importtime`). Prints the
median, min and max wall time of each and the median CPU time (user + system, all
threads: less sensitive than wall time to other load on a shared machine; for
first_round, read from /proc when the line appears); --json writes every run (with the
1-minute load average at its start) and the summary. Workdirs go to a
temporary folder, never into the repo. The modules must resolve to --repo's own
`experiments` and `fedjax_compress` (checked first), so one interpreter can time two
checkouts: `--repo=/path/to/old/checkout --python=.venv/bin/python`.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from absl import app, flags

from benchmarks import cli

REPO = Path(__file__).resolve().parent.parent

FLAGS = flags.FLAGS
flags.DEFINE_string("repo", str(REPO), "The checkout to time (its experiments.main).")
flags.DEFINE_string(
  "python", None, "Interpreter to run; default: REPO/.venv/bin/python if it exists, else this one."
)
flags.DEFINE_integer("repeats", 3, "Timed runs of each measure.", lower_bound=1)
flags.DEFINE_integer("warmup", 1, "Untimed runs of each measure first.", lower_bound=0)
flags.DEFINE_string(
  "config", "configs/default.py", "The first_round run's config, relative to --repo."
)
flags.DEFINE_float(
  "timeout", 900, "Seconds one process may run before it is stopped.", lower_bound=1
)
flags.DEFINE_string("json", None, "Write the runs and the summary here.")

MEASURES = ("help", "import", "first_round", "first_round_total")
PROGRESS = "round "


class BenchError(Exception):
  """A run failed or the setup is wrong; printed as one `error:` line."""


def _one_line(text: str) -> str:
  return " ".join(text.split())


def interpreter(repo: Path, python: str | None) -> str:
  if python:
    return python
  venv = repo / ".venv" / "bin" / "python"
  return str(venv) if venv.exists() else sys.executable


def child_env() -> dict[str, str]:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def _last_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  return _one_line(lines[-1])[:300] if lines else "(no output)"


def _children_cpu() -> float:
  """CPU seconds (user + system) of this process's finished children so far."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float | None:
  """CPU seconds a running process (all its threads) has used; None off Linux."""
  try:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def _load() -> float:
  return os.getloadavg()[0]


def _run(cmd: list[str], repo: Path, timeout: float) -> tuple[float, subprocess.CompletedProcess]:
  start = time.perf_counter()
  try:
    done = subprocess.run(
      cmd, cwd=repo, env=child_env(), capture_output=True, text=True, timeout=timeout
    )
  except subprocess.TimeoutExpired:
    raise BenchError(f"{' '.join(cmd[1:])} ran past --timeout={timeout:g}s; raise --timeout.")
  return time.perf_counter() - start, done


def time_exit(cmd: list[str], repo: Path, timeout: float, ok_codes=(0,)) -> dict:
  load, cpu = _load(), _children_cpu()
  seconds, done = _run(cmd, repo, timeout)
  cpu = _children_cpu() - cpu
  if done.returncode not in ok_codes:
    raise BenchError(
      f"`{' '.join(cmd[1:])}` in {repo} exited {done.returncode}: {_last_line(done.stderr)}"
    )
  return {"seconds": seconds, "cpu_seconds": cpu, "exit_code": done.returncode, "loadavg_1m": load}


def time_first_round(python: str, repo: Path, config: str, workdir: Path, timeout: float) -> dict:
  """Launch to the first `round ` line on stdout, and to the process's exit."""
  cmd = [
    python,
    "-u",
    "-m",
    "experiments.main",
    f"--config={config}",
    f"--workdir={workdir}",
    "--config.rounds=1",
  ]
  load, cpu_before = _load(), _children_cpu()
  with tempfile.TemporaryFile("w+") as err:
    start = time.perf_counter()
    proc = subprocess.Popen(
      cmd, cwd=repo, env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
    )
    assert proc.stdout is not None  # stdout=PIPE
    killed = threading.Event()

    def stop() -> None:
      killed.set()
      proc.kill()

    timer = threading.Timer(timeout, stop)
    timer.start()
    first, first_cpu, first_line = None, None, None
    try:
      for line in proc.stdout:
        if first is None and line.startswith(PROGRESS):
          first, first_line = time.perf_counter() - start, line.rstrip("\n")
          first_cpu = _process_cpu(proc.pid)
      code = proc.wait()
      total = time.perf_counter() - start
    finally:
      timer.cancel()
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      proc.stdout.close()
    total_cpu = _children_cpu() - cpu_before
    err.seek(0)
    stderr = err.read()
  if killed.is_set():
    raise BenchError(f"the first_round run ran past --timeout={timeout:g}s; raise --timeout.")
  if code != 0 or first is None:
    raise BenchError(
      f"`{' '.join(cmd[1:])}` in {repo} exited {code}"
      f"{'' if first else ' without a progress line'}: {_last_line(stderr)}"
    )
  return {
    "seconds": first,
    "cpu_seconds": first_cpu,
    "total_seconds": total,
    "total_cpu_seconds": total_cpu,
    "exit_code": code,
    "first_line": first_line,
    "loadavg_1m": load,
  }


def help_imports(python: str, repo: Path, timeout: float) -> dict[str, bool]:
  """Which heavy top-level packages `--help` imports (`python -X importtime`)."""
  _, done = _run([python, "-X", "importtime", "-m", "experiments.main", "--help"], repo, timeout)
  names = {
    line.rsplit("|", 1)[-1].strip().split(".")[0]
    for line in done.stderr.splitlines()
    if line.startswith("import time:")
  }
  if not names:
    raise BenchError(
      f"`python -X importtime -m experiments.main --help` printed no import "
      f"times: {_last_line(done.stderr)}"
    )
  return {"help_imports_tensorflow": "tensorflow" in names, "help_imports_jax": "jax" in names}


def check_setup(python: str, repo: Path, timeout: float) -> dict:
  """The interpreter runs, and imports --repo's own packages from cwd = repo."""
  probe = (
    "import importlib.util as u, sys; print(sys.version.split()[0]); "
    "print(u.find_spec('experiments').origin); print(u.find_spec('fedjax_compress').origin)"
  )
  try:
    _, done = _run([python, "-c", probe], repo, timeout)
  except OSError as e:
    raise BenchError(
      f"--python={python}: cannot run it ({e.strerror or e}); pass a Python "
      "with the project installed."
    ) from None
  if done.returncode != 0:
    raise BenchError(
      f"--python={python} cannot find experiments or fedjax_compress from "
      f"{repo}: {_last_line(done.stderr)}"
    )
  version, *origins = done.stdout.split()
  for origin in origins:
    if not Path(origin).resolve().is_relative_to(repo):
      raise BenchError(
        f"--python={python} imports {origin}, not the one in --repo={repo}; "
        "this would time the wrong code."
      )
  return {"python_version": version, "modules": origins}


def git_state(repo: Path) -> dict:
  def git(*args):
    try:
      done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60
      )
    except (OSError, subprocess.TimeoutExpired):
      return None
    return done.stdout.strip() if done.returncode == 0 else None

  status = git("status", "--porcelain", "--untracked-files=no")
  return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def summarize(runs: list[dict]) -> dict[str, dict]:
  out = {}
  for measure in MEASURES:
    xs = [r["seconds"] for r in runs if r["measure"] == measure]
    cpu = [
      r["cpu_seconds"] for r in runs if r["measure"] == measure and r.get("cpu_seconds") is not None
    ]
    if xs:
      out[measure] = {
        "median_s": statistics.median(xs),
        "min_s": min(xs),
        "max_s": max(xs),
        "all_s": xs,
        "cpu_median_s": statistics.median(cpu) if cpu else None,
      }
  return out


def benchmark(
  python: str, repo: Path, config: str, repeats: int, warmup: int, timeout: float
) -> dict:
  info = {
    "repo": str(repo),
    "python": python,
    **check_setup(python, repo, timeout),
    **git_state(repo),
    "cores": len(os.sched_getaffinity(0)),
    "loadavg_before": os.getloadavg(),
    "repeats": repeats,
    "warmup": warmup,
    "config": config,
    "JAX_PLATFORMS": "cpu",
  }
  runs = []
  with tempfile.TemporaryDirectory(prefix="startup_bench_") as tmp:
    for i in range(warmup + repeats):
      timed = i >= warmup
      tag = f"repeat {i - warmup + 1}/{repeats}" if timed else f"warmup {i + 1}/{warmup}"
      # absl's --help exits 1 (older absl) or 0.
      help_run = time_exit(
        [python, "-m", "experiments.main", "--help"], repo, timeout, ok_codes=(0, 1)
      )
      import_run = time_exit([python, "-c", "import experiments.train"], repo, timeout)
      round_run = time_first_round(python, repo, config, Path(tmp) / f"run{i}", timeout)
      print(
        f"{tag}: help {help_run['seconds']:.2f}s, import {import_run['seconds']:.2f}s, "
        f"first round {round_run['seconds']:.2f}s (exit {round_run['total_seconds']:.2f}s)",
        flush=True,
      )
      if timed:
        runs += [
          {"measure": "help", "repeat": i - warmup, **help_run},
          {"measure": "import", "repeat": i - warmup, **import_run},
          {"measure": "first_round", "repeat": i - warmup, **round_run},
          {
            "measure": "first_round_total",
            "repeat": i - warmup,
            "seconds": round_run["total_seconds"],
            "cpu_seconds": round_run["total_cpu_seconds"],
            "exit_code": round_run["exit_code"],
            "loadavg_1m": round_run["loadavg_1m"],
          },
        ]
  info.update(help_imports(python, repo, timeout))
  info["loadavg_after"] = os.getloadavg()
  return {**info, "summary": summarize(runs), "runs": runs}


def print_table(result: dict) -> None:
  print(
    f"\n{result['repo']} (commit {str(result['commit'])[:10]}"
    f"{', uncommitted changes' if result['dirty'] else ''}), {result['python']} "
    f"{result['python_version']}, {result['cores']} cores, load "
    f"{result['loadavg_before'][0]:.2f} -> {result['loadavg_after'][0]:.2f}"
  )
  print(f"{'measure':20s} {'median s':>9s} {'min s':>9s} {'max s':>9s} {'CPU s (median)':>15s}")
  for measure, s in result["summary"].items():
    cpu = "n/a" if s["cpu_median_s"] is None else f"{s['cpu_median_s']:.2f}"
    print(f"{measure:20s} {s['median_s']:9.2f} {s['min_s']:9.2f} {s['max_s']:9.2f} {cpu:>15s}")
  print(
    f"--help imports TensorFlow: {result['help_imports_tensorflow']}, "
    f"JAX: {result['help_imports_jax']}"
  )


def main(argv):
  del argv
  try:
    cli.check_json_path(FLAGS.json)
    repo = Path(FLAGS.repo).resolve()
    if not (repo / "experiments" / "main.py").is_file():
      raise BenchError(
        f"--repo={FLAGS.repo} has no experiments/main.py; pass a checkout of this project."
      )
    if not (repo / FLAGS.config).is_file():
      raise BenchError(
        f"--config={FLAGS.config} is not a file in {repo}; pass a config path relative to --repo."
      )
    python = interpreter(repo, FLAGS.python)
    result = benchmark(python, repo, FLAGS.config, FLAGS.repeats, FLAGS.warmup, FLAGS.timeout)
  except BenchError as e:
    print(f"error: {_one_line(str(e))}", file=sys.stderr)
    raise SystemExit(1) from None
  except KeyboardInterrupt:
    print("error: interrupted (Ctrl-C); nothing written.", file=sys.stderr)
    raise SystemExit(130) from None
  print_table(result)
  cli.write_json(FLAGS.json, result)


def parse_flags(argv):
  """absl's flag parsing, a mistake reported as one `error:` line (exit status 2)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {_one_line(str(e))}; see python -m benchmarks.startup --help.", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
