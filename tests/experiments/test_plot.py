"""experiments.plot on generated metrics.jsonl files."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import plot


def write_run(workdir, rounds=12, bits_per_round=532_280_000, eval_every=4, shift=0.0):
  workdir.mkdir(parents=True)
  with open(workdir / "metrics.jsonl", "w") as f:
    for r in range(1, rounds + 1):
      record = {
        "round": r,
        "train/loss": 2.3 / r,
        "train/accuracy": 1 - 0.9 / r,
        "aggregated_bits": r * bits_per_round,
        "broadcasted_bits": r * 532_278_400,
        "update_bits": r * (bits_per_round - 1600),
      }
      if r % eval_every == 0 or r == rounds:
        record.update({"eval/loss": 2.0 / r, "eval/accuracy": 1 - 0.8 / r + shift})
      f.write(json.dumps(record) + "\n")
  return workdir


# A sweep's outputs as experiments.sweep writes them: 10 clients a round, 1000 parameters,
# so bits per parameter = bits per round / 10,000. Seeds shift eval/accuracy by 0.01 each.
CLIENTS, PARAMS = 10, 1000
SWEEP = {"float32": 320_000, "drive": 14_000}


def write_sweep(root, seeds=(0, 1, 2), variants=SWEEP):
  rows = []
  for name, bits_per_round in variants.items():
    workdirs = [f"{name}/seed_{s}" for s in seeds] if len(seeds) > 1 else [name]
    for workdir, seed in zip(workdirs, seeds):
      write_run(root / workdir, bits_per_round=bits_per_round, shift=0.01 * seed)
    rows.append(
      {
        "variant": name,
        "seeds": list(seeds),
        "workdirs": workdirs,
        "clients_per_round": CLIENTS,
        "num_params": PARAMS,
      }
    )
  (root / "frontier.json").write_text(json.dumps({"seeds": list(seeds), "variants": rows}))
  return root


@pytest.fixture
def runs(tmp_path):
  return (
    write_run(tmp_path / "fedavg"),
    write_run(tmp_path / "compressed", bits_per_round=134_641_620),
  )


def test_seed_stats_on_known_numbers():
  stats = plot.seed_stats([1, 2, 3])
  assert (stats.n, stats.mean, stats.std) == (3, 2.0, 1.0)
  # 2 ± t(0.975, 2) · 1 / √3 = 2 ± 4.3027 / 1.7321 = 2 ± 2.4841
  assert (stats.ci_low, stats.ci_high) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-4)
  assert plot.seed_stats([1, 2, 3], use_scipy=False) == pytest.approx(stats, abs=1e-4)
  assert stats.interval("minmax") == (1.0, 3.0)
  assert stats.as_json()["ci95"] == [stats.ci_low, stats.ci_high]
  one = plot.seed_stats([0.5])  # no spread to estimate: not available, not 0
  assert (one.std, one.ci_low, one.ci_high) == (None, None, None)
  assert one.interval("ci95") is None and one.as_json()["ci95"] is None
  with pytest.raises(ValueError, match="at least one seed"):
    plot.seed_stats([])


def test_t_quantile_table_matches_scipy_and_errs_wide():
  scipy_special = pytest.importorskip("scipy.special")
  for dof, t in plot.T_975.items():
    assert t == pytest.approx(float(scipy_special.stdtrit(dof, 0.975)), abs=1e-4)
    assert plot.t_quantile(dof, use_scipy=False) == (t, "table")
  assert plot.t_quantile(2) == (pytest.approx(4.3027, abs=1e-4), "scipy")
  # Between entries: the entry below, a larger t than the exact one (a wider interval).
  assert plot.t_quantile(35, use_scipy=False)[0] == plot.T_975[30] > plot.t_quantile(35)[0]
  assert plot.t_quantile(10_000, use_scipy=False)[0] == plot.T_975[120]


def test_band_across_seeds(tmp_path):
  runs = [plot.read_metrics(write_run(tmp_path / f"s{s}", shift=0.01 * s)) for s in range(3)]
  band = plot.band_series(runs, "eval/accuracy")
  assert band.xs == [4, 8, 12] and band.n == 3
  assert band.mean == pytest.approx([1 - 0.8 / r + 0.01 for r in (4, 8, 12)])
  half = 4.3027 * 0.01 / 3**0.5
  assert band.high[2] - band.mean[2] == pytest.approx(half, abs=1e-5)
  assert plot.band_series(runs, "eval/accuracy", "minmax").low == pytest.approx(
    [1 - 0.8 / r for r in (4, 8, 12)]
  )
  assert plot.band_series(runs[:1], "eval/accuracy").low is None  # one seed: no CI band


def test_sweep_plot_draws_bands_and_the_frontier(tmp_path):
  variants = plot.read_sweep(write_sweep(tmp_path / "sweep"))
  assert [(v.name, v.seeds, len(v.runs)) for v in variants] == [
    ("float32", [0, 1, 2], 3),
    ("drive", [0, 1, 2], 3),
  ]
  points = plot.frontier_points(variants)
  assert [p.x.mean for p in points] == pytest.approx([32.0, 1.4])
  assert points[0].y.mean == pytest.approx(1 - 0.8 / 12 + 0.01)
  fig = plot.plot_sweep(variants)
  rounds_ax, frontier_ax = fig.get_axes()
  assert len(rounds_ax.collections) == 2  # one band per variant
  assert "95% CI" in rounds_ax.get_legend().get_title().get_text()
  assert [t.get_text() for t in rounds_ax.get_legend().get_texts()] == [
    "float32 (n=3)",
    "drive (n=3)",
  ]
  assert frontier_ax.get_xlabel().startswith("uplink bits per parameter\naggregated_bits / ")
  assert frontier_ax.get_xscale() == "log" and "95% CI" in frontier_ax.get_title()
  fig = plot.plot_sweep(variants, band="minmax")
  assert "min-max" in fig.get_axes()[0].get_legend().get_title().get_text()
  assert len(plot.paper_figure(variants).get_axes()) == 1
  assert len(plot.paper_figure(variants, panel="rounds").get_axes()) == 1
  with pytest.raises(
    plot.PlotError,
    match="--metric='eval/bleu' is not in the metrics of variant 'float32', seed 0; pick one of",
  ):
    plot.plot_sweep(variants, metric="eval/bleu")


def pdf_text(data: bytes) -> list[str]:
  """The strings a PDF's content streams draw (Tj, and TJ arrays joined), decoded: a small
  parser for matplotlib's PDFs (Flate streams; Type 42 text as 2-byte Unicode codes)."""
  import re
  import zlib

  escapes = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}

  def unescape(raw):
    out, i = bytearray(), 0
    while i < len(raw):
      if raw[i : i + 1] == b"\\":
        octal = re.match(rb"[0-7]{1,3}", raw[i + 1 : i + 4])
        if octal:
          out.append(int(octal.group(), 8))
          i += 1 + len(octal.group())
          continue
        out += escapes.get(raw[i + 1 : i + 2], raw[i + 1 : i + 2])
        i += 2
      else:
        out += raw[i : i + 1]
        i += 1
    return bytes(out)

  string = rb"\(((?:\\.|[^\\)])*)\)"
  texts = []
  for stream in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S):
    try:
      content = zlib.decompress(stream.group(1))
    except zlib.error:
      continue
    for op in re.finditer(
      rb"\[((?:" + string + rb"|[^\]])*)\]\s*TJ|" + string + rb"\s*Tj", content, re.S
    ):
      raw = b"".join(unescape(s) for s in re.findall(string, op.group(0), re.S))
      texts.append(raw.decode("utf-16-be") if len(raw) % 2 == 0 else raw.decode("latin-1"))
  return texts


def test_sweep_cli_writes_the_paper_pdf_with_real_text(tmp_path, capsys):
  root = write_sweep(tmp_path / "sweep")
  out = tmp_path / "plots" / "frontier"
  out.parent.mkdir()
  before = set(os.listdir(REPO))
  paths = plot.main([f"--sweep={root}", f"--out={out}"])
  assert paths == [f"{out}.png", f"{out}.svg", f"{out}.pdf"]
  assert set(os.listdir(REPO)) == before
  data = open(paths[2], "rb").read()
  assert data.startswith(b"%PDF")
  assert b"/FontFile2" in data and b"/Type3" not in data  # TrueType text, not glyph paths
  texts = pdf_text(data)
  assert "uplink bits per parameter" in texts and "final eval/accuracy" in texts
  assert "drive" in texts
  printed = capsys.readouterr().out
  assert "float32: 3 seeds, 12 rounds, final eval/accuracy 0.9433 [" in printed
  assert "uplink 32.000 bits/parameter" in printed and "wrote" in printed
  paths = plot.main(
    [
      f"--sweep={root}",
      f"--out={out}",
      "--band=minmax",
      "--paper=rounds",
      "--metric=train/loss",
      "--bits=update_bits",
    ]
  )
  assert "round" in pdf_text(open(paths[2], "rb").read())


def test_cli_writes_png_and_svg(runs, tmp_path, capsys):
  out = tmp_path / "plots" / "cmp"
  out.parent.mkdir()
  paths = plot.main(
    [f"--workdirs={runs[0]},{runs[1]}", f"--out={out}", "--logx", "--smooth=3", "--unit=Mibit"]
  )
  assert paths == [f"{out}.png", f"{out}.svg"]
  for path in paths:
    with open(path, "rb") as f:
      head = f.read(512)
    assert len(head) > 100
  assert open(paths[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert b"<svg" in open(paths[1], "rb").read()
  printed = capsys.readouterr().out
  assert "fedavg: 12 rounds, eval acc 0.9333 (round 12)" in printed
  assert "compressed:" in printed and "wrote" in printed


def test_curves_are_labelled_and_axes_named(runs):
  fig = plot.plot_workdirs(runs, labels=["FedAvg", "8-bit"], bits="aggregated_bits")
  axes = fig.get_axes()
  assert len(axes) == 4
  labels = {line.get_label() for line in axes[1].get_lines()}
  assert labels == {"FedAvg, train", "FedAvg, eval", "8-bit, train", "8-bit, eval"}
  # unit="auto": Mibit below 10 Gibit (12 rounds x 507.62 Mibit here).
  assert axes[2].get_xlabel() == "cumulative uplink (aggregated_bits, Mibit)"
  eval_line = next(line for line in axes[3].get_lines() if line.get_label() == "FedAvg, eval")
  assert list(eval_line.get_xdata()) == pytest.approx([r * 532_280_000 / 2**20 for r in (4, 8, 12)])
  fig = plot.plot_workdirs(runs, unit="Gibit")
  assert fig.get_axes()[3].get_xlabel().endswith("Gibit)")
  # Default labels: the workdirs' names.
  fig = plot.plot_workdirs(runs, bits="broadcasted_bits")
  assert {line.get_label() for line in fig.get_axes()[0].get_lines()} >= {
    "fedavg, train",
    "compressed, eval",
  }


def test_missing_workdir_is_a_clear_error(tmp_path, runs):
  with pytest.raises(plot.PlotError, match="workdir '.*nope' does not exist"):
    plot.plot_workdirs([runs[0], tmp_path / "nope"])
  (tmp_path / "empty_dir").mkdir()
  with pytest.raises(plot.PlotError, match="metrics.jsonl not found"):
    plot.read_metrics(tmp_path / "empty_dir")
  (tmp_path / "empty_dir" / "metrics.jsonl").write_text("\n")
  with pytest.raises(plot.PlotError, match="metrics.jsonl is empty"):
    plot.read_metrics(tmp_path / "empty_dir")
  (tmp_path / "empty_dir" / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2\n')
  with pytest.raises(plot.PlotError, match="line 2: not JSON"):
    plot.read_metrics(tmp_path / "empty_dir")


def test_bad_options(runs):
  with pytest.raises(plot.PlotError, match="1 labels for 2 workdirs"):
    plot.plot_workdirs(runs, labels=["one"])
  with pytest.raises(plot.PlotError, match="valid units"):
    plot.plot_workdirs(runs, unit="MB")


@pytest.mark.slow
def test_module_entry_point_exits_with_message(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.plot",
      f"--workdirs={tmp_path / 'missing'}",
      f"--out={tmp_path / 'x'}",
    ],
    capture_output=True,
    text=True,
  )
  assert result.returncode == 1
  assert "error: workdir" in result.stderr and "does not exist" in result.stderr
  assert not (tmp_path / "x.png").exists()


REPO = Path(__file__).resolve().parents[2]


def _tree(root):
  """{relative path: sha256} of every file under root (folders as None)."""
  out = {}
  for path in sorted(Path(root).rglob("*")):
    rel = str(path.relative_to(root))
    out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
  return out


def _metrics(path, text):
  path.mkdir()
  (path / "metrics.jsonl").write_bytes(text if isinstance(text, bytes) else text.encode())
  return path


def _fake_matplotlib(tmp, body):
  """A folder to put first on PYTHONPATH whose `matplotlib` runs `body` on import."""
  folder = tmp / "fake_site"
  folder.mkdir()
  (folder / "matplotlib.py").write_text(body)
  return {"PYTHONPATH": str(folder)}


def _readonly_dir(tmp):
  folder = tmp / "readonly"
  folder.mkdir()
  folder.chmod(0o555)
  if os.access(folder, os.W_OK):  # root ignores the mode
    pytest.skip("running as root: a chmod 555 folder is still writable")
  return folder


def _unwritable_system_dir(tmp):
  if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and _probe("/sys"):
    pytest.skip("/sys is writable here")
  return Path("/sys")


def _probe(folder):
  import tempfile

  try:
    tempfile.TemporaryFile(dir=folder).close()
    return True
  except OSError:
    return False


def _run_with(tmp, text):
  """--workdirs= a fresh workdir whose metrics.jsonl holds `text`."""
  return "--workdirs=" + str(_metrics(tmp / "run", text))


def _mkdir(path):
  path.mkdir()
  return path


CORRUPT = '{"round": 1}\n{"round": 2\n'
NO_ROUND = '{"loss": 1.0}\n'
ROUND_TEXT = '{"round": "one"}\n'
BITS_TEXT = '{"round": 1, "aggregated_bits": "x"}\n'
UPLINK_ONLY = '{"round": 1, "aggregated_bits": 8}\n'
NO_MATPLOTLIB = "raise ModuleNotFoundError(\"No module named 'matplotlib'\")\n"
# (Python's own SIGINT handler, even where the test runs with SIGINT ignored, as under nohup.)
CTRL_C = (
  "import os, signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
  "os.kill(os.getpid(), signal.SIGINT)\n"
)

# (id, setup(tmp, good workdir) -> (argv, extra env), exit status, what the error line says)
BAD_INVOCATIONS = [
  ("no_flags", lambda t, g: ([], {}), 2, "--workdirs is required"),
  ("no_workdirs", lambda t, g: ([f"--out={t / 'o'}"], {}), 2, "--workdirs is required"),
  (
    "empty_workdirs",
    lambda t, g: (["--workdirs=,", f"--out={t / 'o'}"], {}),
    2,
    "names no workdir",
  ),
  (
    "missing_workdir",
    lambda t, g: ([f"--workdirs={g},{t / 'nope'}", f"--out={t / 'o'}"], {}),
    1,
    "does not exist",
  ),
  (
    "no_metrics_file",
    lambda t, g: ([f"--workdirs={_mkdir(t / 'bare')}", f"--out={t / 'o'}"], {}),
    1,
    "metrics.jsonl not found",
  ),
  ("empty_metrics", lambda t, g: ([_run_with(t, ""), f"--out={t / 'o'}"], {}), 1, "is empty"),
  ("blank_metrics", lambda t, g: ([_run_with(t, "\n\n"), f"--out={t / 'o'}"], {}), 1, "is empty"),
  (
    "corrupt_json",
    lambda t, g: ([_run_with(t, CORRUPT), f"--out={t / 'o'}"], {}),
    1,
    "line 2: not JSON",
  ),
  (
    "no_round_key",
    lambda t, g: ([_run_with(t, NO_ROUND), f"--out={t / 'o'}"], {}),
    1,
    "'round' key",
  ),
  (
    "not_an_object",
    lambda t, g: ([_run_with(t, "[1, 2]\n"), f"--out={t / 'o'}"], {}),
    1,
    "'round' key",
  ),
  (
    "round_not_number",
    lambda t, g: ([_run_with(t, ROUND_TEXT), f"--out={t / 'o'}"], {}),
    1,
    "round='one' is not a number",
  ),
  (
    "bits_not_number",
    lambda t, g: ([_run_with(t, BITS_TEXT), f"--out={t / 'o'}"], {}),
    1,
    "aggregated_bits='x' is not a number",
  ),
  (
    "not_utf8",
    lambda t, g: ([_run_with(t, b"\xff\xfe\x00\n"), f"--out={t / 'o'}"], {}),
    1,
    "not UTF-8",
  ),
  (
    "labels_count",
    lambda t, g: ([f"--workdirs={g}", "--labels=a,b", f"--out={t / 'o'}"], {}),
    2,
    "2 labels for 1 workdirs",
  ),
  (
    "labels_not_distinct",
    lambda t, g: ([f"--workdirs={g},{g}", f"--out={t / 'o'}"], {}),
    1,
    "not distinct",
  ),
  (
    "out_folder_missing",
    lambda t, g: ([f"--workdirs={g}", f"--out={t / 'no' / 'o'}"], {}),
    2,
    "does not exist; create it",
  ),
  (
    "out_folder_is_file",
    lambda t, g: ([f"--workdirs={g}", f"--out={g / 'metrics.jsonl' / 'o'}"], {}),
    2,
    "is not a folder",
  ),
  (
    "out_folder_readonly",
    lambda t, g: ([f"--workdirs={g}", f"--out={_readonly_dir(t) / 'o'}"], {}),
    2,
    "is not writable",
  ),
  (
    "out_folder_unwritable_mount",
    lambda t, g: ([f"--workdirs={g}", f"--out={_unwritable_system_dir(t) / 'o'}"], {}),
    2,
    "not writable",
  ),
  ("out_empty", lambda t, g: ([f"--workdirs={g}", "--out="], {}), 2, "--out is empty"),
  ("out_is_folder", lambda t, g: ([f"--workdirs={g}", f"--out={t}/"], {}), 2, "names a folder"),
  (
    "out_png_is_folder",
    lambda t, g: ([f"--workdirs={g}", f"--out={_mkdir(t / 'o.png').parent / 'o'}"], {}),
    2,
    "o.png is a folder",
  ),
  (
    "unknown_bits",
    lambda t, g: ([f"--workdirs={g}", "--bits=uplink", f"--out={t / 'o'}"], {}),
    2,
    "invalid choice: 'uplink'",
  ),
  (
    "bits_absent_in_run",
    lambda t, g: ([_run_with(t, UPLINK_ONLY), "--bits=update_bits", f"--out={t / 'o'}"], {}),
    1,
    "pick another --bits",
  ),
  (
    "unknown_unit",
    lambda t, g: ([f"--workdirs={g}", "--unit=MB", f"--out={t / 'o'}"], {}),
    2,
    "invalid choice: 'MB'",
  ),
  (
    "unknown_flag",
    lambda t, g: ([f"--workdirs={g}", "--bogus=1", f"--out={t / 'o'}"], {}),
    2,
    "unrecognized arguments: --bogus=1",
  ),
  (
    "positional_argument",
    lambda t, g: ([f"--workdirs={g}", "extra", f"--out={t / 'o'}"], {}),
    2,
    "unrecognized arguments: extra",
  ),
  (
    "smooth_not_number",
    lambda t, g: ([f"--workdirs={g}", "--smooth=ten", f"--out={t / 'o'}"], {}),
    2,
    "invalid int value: 'ten'",
  ),
  (
    "smooth_below_one",
    lambda t, g: ([f"--workdirs={g}", "--smooth=-3", f"--out={t / 'o'}"], {}),
    2,
    "at least 1",
  ),
  (
    "matplotlib_missing",
    lambda t, g: ([f"--workdirs={g}", f"--out={t / 'o'}"], _fake_matplotlib(t, NO_MATPLOTLIB)),
    1,
    "pip install -e '.[plot]'",
  ),
  (
    "ctrl_c",
    lambda t, g: ([f"--workdirs={g}", f"--out={t / 'o'}"], _fake_matplotlib(t, CTRL_C)),
    130,
    "interrupted",
  ),
  ("out_missing", lambda t, g: ([f"--workdirs={g}"], {}), 2, "--out is required"),
  (
    "sweep_and_workdirs",
    lambda t, g: ([f"--workdirs={g}", f"--sweep={t}", f"--out={t / 'o'}"], {}),
    2,
    "are both given",
  ),
  (
    "band_with_workdirs",
    lambda t, g: ([f"--workdirs={g}", "--band=minmax", f"--out={t / 'o'}"], {}),
    2,
    "--band applies to --sweep",
  ),
  (
    "sweep_without_summary",
    lambda t, g: ([f"--sweep={g}", f"--out={t / 'o'}"], {}),
    1,
    "frontier.json not found",
  ),
  (
    "sweep_summary_without_seeds",
    lambda t, g: ([f"--sweep={_old_sweep(t)}", f"--out={t / 'o'}"], {}),
    1,
    "without seeds",
  ),
  (
    "sweep_run_missing",
    lambda t, g: ([f"--sweep={_sweep_missing_run(t)}", f"--out={t / 'o'}"], {}),
    1,
    "does not exist",
  ),
  (
    "sweep_metric_absent",
    lambda t, g: ([f"--sweep={write_sweep(t / 's')}", "--metric=eval/f1", f"--out={t / 'o'}"], {}),
    1,
    "--metric='eval/f1' is not in the metrics of variant 'float32', seed 0",
  ),
]


def _old_sweep(tmp):
  """A --root whose frontier.json is the list an experiments.sweep without seeds wrote."""
  root = _mkdir(tmp / "old")
  (root / "frontier.json").write_text('[{"variant": "float32", "bits_per_param": 32.0}]')
  return root


def _sweep_missing_run(tmp):
  root = write_sweep(tmp / "s")
  (root / "drive" / "seed_1" / "metrics.jsonl").unlink()
  (root / "drive" / "seed_1").rmdir()
  return root


@pytest.mark.slow
@pytest.mark.parametrize(
  "setup,code,words", [c[1:] for c in BAD_INVOCATIONS], ids=[c[0] for c in BAD_INVOCATIONS]
)
def test_bad_invocation_is_one_error_line(tmp_path, setup, code, words):
  good = write_run(tmp_path / "good")
  argv, env_extra = setup(tmp_path, good)
  before = _tree(tmp_path)
  repo_before = set(os.listdir(REPO))
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **env_extra}
  result = subprocess.run(
    [sys.executable, "-m", "experiments.plot", *argv],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  lines = result.stderr.splitlines()
  assert result.returncode == code, result.stderr
  assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].strip() != "error:", lines
  assert words in lines[0]
  assert "Traceback" not in result.stdout + result.stderr
  if (tmp_path / "readonly").exists():
    (tmp_path / "readonly").chmod(0o755)
  assert _tree(tmp_path) == before  # no output, no temp file, the workdirs untouched
  assert set(os.listdir(REPO)) == repo_before


def test_ctrl_c_in_process_exits_130(runs, tmp_path, monkeypatch, capsys):
  def interrupt(workdir):
    raise KeyboardInterrupt

  monkeypatch.setattr(plot, "read_metrics", interrupt)
  with pytest.raises(SystemExit) as exit_info:
    plot.cli([f"--workdirs={runs[0]}", f"--out={tmp_path / 'o'}"])
  assert exit_info.value.code == 130
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith("error: interrupted")


def test_interrupted_save_leaves_no_partial_file(tmp_path):
  class Fig:
    def savefig(self, f, **kwargs):
      f.write(b"half a png")
      raise KeyboardInterrupt

  (tmp_path / "o.png").write_bytes(b"earlier plot")
  with pytest.raises(KeyboardInterrupt):
    plot.save(Fig(), tmp_path / "o")
  assert _tree(tmp_path) == {"o.png": hashlib.sha256(b"earlier plot").hexdigest()}


@pytest.mark.slow
def test_plot_imports_neither_jax_nor_tensorflow(runs, tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-X",
      "importtime",
      "-m",
      "experiments.plot",
      f"--workdirs={runs[0]},{runs[1]}",
      f"--out={tmp_path / 'o'}",
    ],
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  modules = {
    line.rsplit("|", 1)[-1].strip().split(".")[0]
    for line in result.stderr.splitlines()
    if line.startswith("import time:")
  }
  assert "matplotlib" in modules
  assert not modules & {"jax", "jaxlib", "flax", "tensorflow", "fedjax_compress"}, modules
