"""The benchmark scripts that must not rot: the GPU check in its CPU form (every step of it,
torchrun included), and the engine benchmark on one tiny size."""

import json
from pathlib import Path

import pytest

from helpers import ENV, run_python

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "report.json"
    run = run_python("benchmarks/gpu_check.py", "--tiny", "--out", out, cwd=ROOT, timeout=600, env={**ENV, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["tiny"] is True
    steps = report["steps"]
    assert set(steps) == {"cuda_tests", "train", "distill_cached", "distill_online", "spawn", "eval", "folder", "torchrun", "determinism"}
    assert all(step["ok"] for step in steps.values())
    assert steps["torchrun"]["backend"] == "gloo" and steps["folder"]["pipeline_images_per_second"] > 0
    assert report["distill_vs_train"] > 0


def test_engine_benchmark_prints_every_ratio():
    run = run_python("benchmarks/bench_engine.py", "--sizes", "1x64", "--steps", "3", "--repeats", "1", "--threads", "1", cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr
    ratios = [line.split()[-1] for line in run.stdout.splitlines() if ": engine" in line]
    assert len(ratios) == 7 and all(r.endswith("x") and float(r[:-1]) > 0 for r in ratios)  # 3 cases, with and without the checkpoint; the fit
