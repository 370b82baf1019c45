"""notebooks/colab_tpu.ipynb runs top to bottom on CPU with the tiny parameters."""

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "colab_tpu.ipynb"
TIMEOUT_S = 180  # per cell; the whole tiny run takes well under a minute on 2 cores


def test_notebook_is_valid_and_committed_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, "clear the outputs"
  source = "\n".join(cell.source for cell in nb.cells)
  for needle in (
    "REPO_URL",
    "FEDJAX_NOTEBOOK_TINY",
    "jax.default_backend()",
    "train.train_and_evaluate",
    "config.strategy = STRATEGY",
    "IN_COLAB",
    '"load_ext", "tensorboard"',
    "plot.plot_workdirs",
  ):
    assert needle in source, needle


@pytest.mark.slow
def test_notebook_runs_tiny_on_cpu(tmp_path, monkeypatch):
  monkeypatch.setenv("FEDJAX_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("FEDJAX_NOTEBOOK_WORKDIR", str(tmp_path / "runs"))
  # Ask for EMNIST with an empty cache and no download: exercises the fallback.
  monkeypatch.setenv("FEDJAX_NOTEBOOK_DATASET", "emnist")
  monkeypatch.setenv("FEDJAX_COMPRESS_CACHE", str(tmp_path / "empty_cache"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
    nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
  )
  client.execute()  # Raises CellExecutionError, with the cell and traceback, on failure.

  text = "\n".join(
    out.get("text", "")
    for cell in nb.cells
    if cell.cell_type == "code"
    for out in cell.outputs
    if out.get("output_type") == "stream"
  )
  assert "TINY=True IN_COLAB=False" in text
  assert "backend: cpu" in text
  assert "falling back to the embedded dataset 'sklearn_digits'" in text
  assert "TensorBoard: tensorboard --logdir" in text
  images = [
    out
    for cell in nb.cells
    for out in cell.get("outputs", [])
    if "image/png" in out.get("data", {})
  ]
  assert images, "the plot is displayed"
  first = {}
  for name in ("fedavg", "compression"):
    metrics = tmp_path / "runs" / f"{name}-sklearn_digits-mlp-c2" / "metrics.jsonl"
    records = [json.loads(line) for line in open(metrics)]
    assert len(records) == 2 and "eval/accuracy" in records[-1]
    first[name] = records[0]
  assert first["compression"]["round_update_bits"] < first["fedavg"]["round_update_bits"]
  for suffix in ("png", "svg"):
    assert (tmp_path / "runs" / f"accuracy_vs_bits.{suffix}").stat().st_size > 0
