"""Packaging: the version entry point and setup.py's metadata."""

import re
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from packaging.requirements import Requirement

import fedjax_compress

REPO = Path(__file__).resolve().parent.parent


def test_version_is_pep440():
  assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", fedjax_compress.__version__)


@pytest.mark.slow
def test_python_m_fedjax_compress_version():
  result = subprocess.run(
    [sys.executable, "-m", "fedjax_compress", "--version"],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=60,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f"fedjax_compress {fedjax_compress.__version__}"


def test_python_m_fedjax_compress_help(capsys):
  from fedjax_compress import __main__

  assert __main__.main([]) == 0
  assert "python -m experiments.main" in capsys.readouterr().out


@pytest.fixture(scope="module")
def setup_kwargs():
  """The keyword arguments setup.py passes to setuptools.setup, without building anything."""
  with mock.patch("setuptools.setup") as setup:
    runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
  (kwargs,) = [c.kwargs for c in setup.call_args_list]
  return kwargs


def test_setup_metadata(setup_kwargs):
  assert setup_kwargs["name"] == "fedjax_compress"
  assert setup_kwargs["version"] == fedjax_compress.__version__
  assert "fedjax_compress.data" in setup_kwargs["packages"]
  assert {"test", "notebook"} <= set(setup_kwargs["extras_require"])


def test_every_requirement_has_a_bounded_version_range(setup_kwargs):
  requirements = list(setup_kwargs["install_requires"])
  for extra in setup_kwargs["extras_require"].values():
    requirements += extra
  for text in requirements:
    ops = {spec.operator for spec in Requirement(text).specifier}
    assert ops & {">=", "~=", "=="} and ops & {"<", "~=", "=="}, f"{text!r} needs a range"


@pytest.mark.slow
def test_setup_py_version_command():
  result = subprocess.run(
    [sys.executable, "setup.py", "--version"], capture_output=True, text=True, cwd=REPO, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == fedjax_compress.__version__
