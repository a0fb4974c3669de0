"""The GPU benchmark's smoke run: the tiny shape on CPU, every figure produced and sane."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_gpu import main


def test_bench_gpu_runs_in_a_tiny_shape_on_cpu(tmp_path: Path, capsys) -> None:
    r = main(["--model", "tiny", "--device", "cpu", "--dtype", "float32", "--tokens", "2048", "--contexts-per-unit", "8",
              "--rounds", "1", "--peak-tflops", "1", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ratio pipeline/bare" in out and "MFU" in out
    assert r["bare_tok_s"] > 0 and r["pipeline_tok_s"] > 0 and r["ratio"] > 0
    assert 40 < r["mean_l0"] < 130  # thresholds set from the model's activations (target 80)
    assert 0 < r["mfu_pipeline"] < 1 and r["model_gflop_per_token"] > 0
    # one pass writes three sites' activations (float32, 64 wide) and the codes of three SAEs
    assert r["bytes_written_per_pass"] > r["tokens"] * 3 * 64 * 4
    assert r["unit_compute_s"] > 0 and r["unit_write_s"] > 0 and "per unit (" in out
