"""Subnormal floats are flushed to zero by the command line (diffkit/cpu.py), and the opt-out keeps them.

Each check runs in a fresh interpreter: the mode belongs to the threads of a process, and this test process's
own numerics must not change."""
import os
import subprocess
import sys

import pytest

PROBE = "import torch; print(float(torch.tensor([1e-39]) * 1.0))"  # 1e-39 is subnormal in float32


def run(code: str, **env) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_a_plain_interpreter_keeps_subnormals():
    assert float(run(PROBE)) == pytest.approx(1e-39, rel=1e-3)


def test_flush_denormals_zeroes_them_and_keep_opts_out():
    assert float(run(f"from diffkit.cpu import flush_denormals; assert flush_denormals(); {PROBE}", DIFFKIT_DENORMALS="")) == 0.0
    assert float(run(f"from diffkit.cpu import flush_denormals; assert not flush_denormals(); {PROBE}", DIFFKIT_DENORMALS="keep")) > 0


def test_the_command_line_flushes_them_in_its_worker_threads_too():
    code = ("import torch; from diffkit.cli import main; main(['plugins']); torch.set_num_threads(2); "
            "x = torch.full((4096, 256), 1e-39); print(float((x * 1.0).abs().sum()))")  # large enough to run on the OpenMP workers
    assert float(run(code, DIFFKIT_DENORMALS="")) == 0.0


def test_a_cpu_has_bfloat16_units_with_amx_tiles_or_avx512_bf16(monkeypatch):
    import torch

    from diffkit import cpu

    for amx, avx512_bf16 in [(True, False), (False, True), (False, False)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        assert cpu.native_bf16("cpu") is (amx or avx512_bf16)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert cpu.native_bf16("cpu") is False  # a torch without the checks: float32, never a guess


def test_auto_precision_is_bf16_only_where_the_device_has_bfloat16_units(monkeypatch):
    from diffkit import cpu

    assert cpu.resolve_precision("fp32") == "fp32" and cpu.resolve_precision("bf16", "cuda:0") == "bf16"
    monkeypatch.setattr(cpu, "native_bf16", lambda device="cpu": True)
    assert cpu.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(cpu, "native_bf16", lambda device="cpu": False)
    assert cpu.resolve_precision("auto", "cpu") == "fp32"
    assert cpu.native_bf16("mps") is False  # no device kind whose gain was measured here
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto.*'half'"):
        cpu.resolve_precision("half")
