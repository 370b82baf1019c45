"""experiments.plot on generated metrics.jsonl files."""

import json
import subprocess
import sys

import pytest

from experiments import plot


def write_run(workdir, rounds=12, bits_per_round=532_280_000, eval_every=4):
  workdir.mkdir(parents=True)
  with open(workdir / "metrics.jsonl", "w") as f:
    for r in range(1, rounds + 1):
      record = {"round": r, "train/loss": 2.3 / r, "train/accuracy": 1 - 0.9 / r,
                "aggregated_bits": r * bits_per_round, "broadcasted_bits": r * 532_278_400,
                "update_bits": r * (bits_per_round - 1600)}
      if r % eval_every == 0 or r == rounds:
        record.update({"eval/loss": 2.0 / r, "eval/accuracy": 1 - 0.8 / r})
      f.write(json.dumps(record) + "\n")
  return workdir


@pytest.fixture
def runs(tmp_path):
  return (write_run(tmp_path / "fedavg"),
          write_run(tmp_path / "compressed", bits_per_round=134_641_620))


def test_cli_writes_png_and_svg(runs, tmp_path, capsys):
  out = tmp_path / "plots" / "cmp"
  paths = plot.main([f"--workdirs={runs[0]},{runs[1]}", f"--out={out}", "--logx",
                     "--smooth=3", "--unit=Mibit"])
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
  eval_line = next(l for l in axes[3].get_lines() if l.get_label() == "FedAvg, eval")
  assert list(eval_line.get_xdata()) == pytest.approx(
      [r * 532_280_000 / 2**20 for r in (4, 8, 12)])
  fig = plot.plot_workdirs(runs, unit="Gibit")
  assert fig.get_axes()[3].get_xlabel().endswith("Gibit)")
  # Default labels: the workdirs' names.
  fig = plot.plot_workdirs(runs, bits="broadcasted_bits")
  assert {l.get_label() for l in fig.get_axes()[0].get_lines()} >= {"fedavg, train",
                                                                    "compressed, eval"}


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


def test_module_entry_point_exits_with_message(tmp_path):
  result = subprocess.run([sys.executable, "-m", "experiments.plot",
                           f"--workdirs={tmp_path / 'missing'}", f"--out={tmp_path / 'x'}"],
                          capture_output=True, text=True)
  assert result.returncode == 1
  assert "error: workdir" in result.stderr and "does not exist" in result.stderr
  assert not (tmp_path / "x.png").exists()
