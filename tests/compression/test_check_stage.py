"""check_stage measures what a stage does, including whether its declarations hold."""

import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

from fedjax_compress import compression
from fedjax_compress.compression.check_stage import main

ROOT = Path(__file__).resolve().parent.parent.parent


def _per_client_scaled_sign(commutes_with_sum: bool) -> compression.Stage:
  """Signs as floats and each client's own mean |x|: linear in nothing, whatever it claims."""

  def encode(x, key, shared):
    return compression.Encoded(jnp.sign(x), jnp.mean(jnp.abs(x)))

  def decode(enc, spec, shared):
    return enc.side * enc.values

  return compression.stateless(encode, decode, commutes_with_sum=commutes_with_sum)


def test_a_wrong_commutes_with_sum_claim_is_caught():
  report = compression.check_stage(_per_client_scaled_sign(True), dim=512)
  assert report.commutes_with_sum and not report.commutes_holds
  assert "side information differs" in report.commute_note
  assert report.stage == "an unnamed stage"


def test_a_rotation_commutes_and_decodes_exactly():
  report = compression.check_stage("hadamard", dim=1000)  # padded to 1024 and back
  assert report.commutes_with_sum and report.commutes_holds
  assert report.commute_error < 1e-5
  assert report.shape_ok and report.decoded_shape == (1000,)
  assert report.vnmse < 1e-10 and report.bits_per_value == pytest.approx(32 * 1024 / 1000)


def test_rand_k_commutes_and_is_unbiased():
  report = compression.check_stage("rand_k(fraction=0.25)", dim=2048, draws=32)
  assert report.commutes_holds
  assert report.vnmse == pytest.approx(1 / 0.25 - 1, rel=0.1)
  assert report.bias < 1.3 * report.bias_floor
  assert report.bits_per_value == pytest.approx(32 * 0.25)


def test_bits_per_value_of_two_bit_quantization_is_about_two():
  report = compression.check_stage("uniform_quantize(bits=2)", dim=4096)
  assert report.bits_per_value == pytest.approx(2 + 64 / 4096)  # codes, then min and max
  assert not report.commutes_with_sum and not report.commutes_holds
  # Stochastic rounding is unbiased: its bias is the noise floor of 16 draws.
  assert 0.8 * report.bias_floor < report.bias < 1.2 * report.bias_floor


def test_identity_is_exact():
  report = compression.check_stage(compression.identity(), dim=300)
  assert report.vnmse == 0 and report.bias == 0
  assert report.bits_per_value == 32 and report.commutes_holds


def test_a_biased_stage_shows_a_bias_above_the_noise_floor():
  report = compression.check_stage("scaled_sign", dim=4096)  # deterministic: every draw the same
  assert report.vnmse == pytest.approx(1 - 2 / 3.141592653589793, rel=0.05)
  assert report.bias > 3 * report.bias_floor


def test_a_decoder_that_changes_the_dtype_is_reported():
  stage = compression.stateless(
    lambda x, key, shared: compression.Encoded(x),
    lambda enc, spec, shared: enc.values.astype(jnp.bfloat16),
  )
  report = compression.check_stage(stage, dim=64)
  assert not report.shape_ok and report.decoded_dtype == "bfloat16"
  assert "DIFFERS from the input" in compression.format_report(report)


def test_streams_count_at_their_measured_length():
  report = compression.check_stage(
    "dithered_codes(bits=8,step=0.26),entropy_code(bits=8)", dim=2048
  )
  assert 3.8 < report.bits_per_value < 4.4  # ~4 bits of entropy, not the 8-bit capacity


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(dim=0), "check_stage: dim=0 is invalid"),
    (dict(clients=1), "check_stage: clients=1 is invalid: it must be an int >= 2"),
    (dict(draws=1.5), "check_stage: draws=1.5 is invalid"),
  ],
)
def test_bad_check_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    compression.check_stage("hadamard", **kwargs)


def test_the_command_line_prints_a_table(capsys):
  assert main(["hadamard,uniform_quantize(bits=2)", "--dim=1024", "--clients=2", "--draws=2"]) == 0
  out = capsys.readouterr().out
  for row in ("stage", "bits per value", "vNMSE", "bias (relative)", "commutes_with_sum"):
    assert row in out
  assert "hadamard,uniform_quantize(bits=2)" in out and "2.0625" in out


@pytest.mark.parametrize(
  "argv, message",
  [
    (["nope"], "error: Unknown stage 'nope'"),
    (["top_k(fraction=5.0)"], "error: top_k: fraction=5.0 is invalid: it must be in (0, 1]"),
    (["uniform_quantize(bits=2),hadamard"], "error: chain: hadamard takes float values"),
    (["uniform_quantize(bitz=2)"], "error: 'bitz' is not an argument of stage"),
    (["hadamard", "--dim=abc"], "error: argument --dim: invalid int value"),
    (["hadamard", "--dim=0"], "error: check_stage: dim=0 is invalid"),
    ([], "error: the following arguments are required: stages"),
    (["hadamard", "--imports=no_such_module_x"], "error: No module named 'no_such_module_x'"),
  ],
)
def test_bad_input_is_one_error_line_and_status_2(capsys, argv, message):
  assert main(argv) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.count("\n") == 1 and captured.err.startswith(message)


def test_python_dash_m_runs_it_without_a_traceback():
  command = [sys.executable, "-m", "fedjax_compress.compression.check_stage"]
  good = subprocess.run(
    command + ["identity", "--dim=8", "--draws=2"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert good.returncode == 0, good.stderr
  assert "vNMSE" in good.stdout and "Warning" not in good.stderr
  bad = subprocess.run(
    command + ["eden(bits=9)"], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert bad.returncode == 2 and bad.stdout == ""
  assert bad.stderr.strip().splitlines() == [
    "error: eden: bits=9 is invalid: it must be an int in 1..8."
  ]
