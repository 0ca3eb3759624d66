"""SIGINT and SIGTERM, sent for real to a real `wave` process: one line saying what was kept and
the exact command that resumes, exit 130 or 143, no traceback, nothing half-written; and the
printed command resumes to a bit-identical result."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import ENV, run_python, start_wave, wave

pytestmark = pytest.mark.slow

# Small enough to finish in seconds, long enough (6 epochs of 23 steps) to be interrupted mid-run.
TRAIN = ["train", "--depth", "1", "--width", "64", "--epochs", "6", "--batch-size", "64", "--lr", "3e-3"]


def interrupt_when(process: subprocess.Popen, ready: Path, signum: int, delay: float = 0.3, timeout: float = 120) -> tuple[int, str]:
    """Send `signum` once `ready` exists (the run is under way), then wait: (exit code, stderr)."""
    deadline = time.monotonic() + timeout
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def last_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


def resume_command(line: str) -> list[str]:
    """The command the message says continues the run, as arguments after `wave`."""
    assert "resume with: wave " in line, line
    return shlex.split(line.split("resume with: wave ", 1)[1])


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_training_says_how_to_resume_and_resumes_bit_identical(tmp_path, signum, code):
    reference = wave(*TRAIN, "--out", tmp_path / "reference.safetensors", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "victim.safetensors"
    process = start_wave(*TRAIN, "--out", out, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    returncode, stderr = interrupt_when(process, Path(f"{out}.ckpt"), signum)

    assert returncode == code, stderr
    assert "Traceback" not in stderr
    line = last_line(stderr)
    assert line.startswith(f"interrupted by {signal.Signals(signum).name}: kept the checkpoint {out}.ckpt (step ")
    assert not out.exists()  # the model file is only written at the end
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    args = resume_command(line)
    assert args[-1] == "--resume" and args[:-1] == [*TRAIN, "--out", str(out)]
    resumed = wave(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at epoch" in resumed.stderr
    expected, actual = load_file(tmp_path / "reference.safetensors"), load_file(out)
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    # The metrics file has every epoch once, across the interruption.
    rows = (tmp_path / "victim.metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2", "3", "4", "5", "6"]
    assert rows == (tmp_path / "reference.metrics.csv").read_text().splitlines()[:1] + rows[1:]


def test_interrupted_distillation_resumes_bit_identical(ancestry, tmp_path):
    args = ["distill", "--teacher", ancestry, "--depth", "1", "--width", "64", "--templates", "2", "--epochs", "4", "--lr", "3e-3"]
    reference = wave(*args, "--out", tmp_path / "reference.safetensors", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "victim.safetensors"
    process = start_wave(*args, "--out", out, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    returncode, stderr = interrupt_when(process, Path(f"{out}.ckpt"), signal.SIGINT)
    assert returncode == 130 and "Traceback" not in stderr, stderr
    resumed = wave(*resume_command(last_line(stderr)), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = load_file(tmp_path / "reference.safetensors"), load_file(out)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_interrupted_spawn_writes_nothing(learngene_file, tmp_path):
    out = tmp_path / "spawned.safetensors"
    process = start_wave("spawn", "--learngene", learngene_file, "--depth", "4", "--width", "128", "--fit-steps", "100000", "--fit-patience", "0",
                         "--out", out, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The fit has no checkpoint: whether the signal lands before the fit or during it, nothing is written.
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    line = last_line(stderr)
    assert line.startswith("interrupted by SIGTERM: nothing was written; start again with: wave spawn ")
    assert "Traceback" not in stderr and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_bench_keeps_its_finished_cells(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--quick", "--seeds", "1", "--depths", "1", "--widths", "32", "--extra-sizes", "none", "--ancestry-epochs", "2",
            "--capacity", "2x32x1", "--methods", "random,wave", "--downstream", "none", "--fit-study", "5", "--fit-steps", "5",
            "--fit-samples", "100", "--lrs", "1e-2", "--epochs", "3", "--out", out]
    process = start_wave(*args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    returncode, stderr = interrupt_when(process, out / "cells.jsonl", signal.SIGINT, delay=0.0)
    assert returncode == 130, stderr
    line = last_line(stderr)
    assert "finished cells in" in line and line.endswith(f"resume with: wave {shlex.join(map(str, args))}"), line
    done = len((out / "cells.jsonl").read_text().splitlines())
    assert f"kept {done} finished cells" in line or f"and {done} finished cells" in line
    again = wave(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{done} skipped" in again.stderr


def test_under_torchrun_every_rank_stops_and_the_run_resumes(tmp_path):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "waveinit.cli"]
    args = ["train", "--depth", "1", "--width", "64", "--epochs", "40", "--batch-size", "64", "--lr", "3e-3", "--device", "cpu"]
    reference = run_python(*launcher, *args, "--out", tmp_path / "reference.safetensors", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "victim.safetensors"
    process = subprocess.Popen([sys.executable, *launcher, *map(str, args), "--out", str(out)], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _, stderr = interrupt_when(process, Path(f"{out}.ckpt"), signal.SIGTERM, delay=1.0)
    assert process.returncode != 0
    # Every rank stopped (none is left in the launcher's session), and rank 0 said what it kept.
    leftovers = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True, check=False).stdout.split()
    assert leftovers == [], leftovers
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted by")]
    assert len(lines) == 1 and f"kept the checkpoint {out}.ckpt (step " in lines[0], stderr[-3000:]
    assert "torchrun --nproc_per_node 2 -m waveinit.cli train" in lines[0] and lines[0].endswith("--resume")

    resumed = run_python(*launcher, *args, "--out", out, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, actual = load_file(tmp_path / "reference.safetensors"), load_file(out)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_a_real_error_is_not_hidden_by_a_pending_signal_and_resume_is_offered_only_with_a_checkpoint():
    from waveinit.cli.main import interrupted_message
    from waveinit.errors import WaveError
    from waveinit.training import interrupts

    with pytest.raises(WaveError, match="the real problem"):
        with interrupts.armed():
            interrupts._pending = signal.SIGINT  # noted, not yet acted on, when the error comes
            raise WaveError("the real problem")
    interrupts.clear()
    args = ["train", "--epochs", "3", "--out", "m.safetensors"]
    nothing = interrupted_message(interrupts.Interrupted(signal.SIGINT), args)
    assert nothing.endswith("start again with: wave train --epochs 3 --out m.safetensors")
    kept = interrupted_message(interrupts.Interrupted(signal.SIGTERM, "the checkpoint m.safetensors.ckpt (step 5 of 9)"), args)
    assert kept.startswith("interrupted by SIGTERM: kept the checkpoint") and kept.endswith("--resume")
