"""The command line's contract for bad input, and the house rules on imports."""


import numpy as np
import pytest

from conftest import random_factors
from helpers import add_tensor, run_python, wave
from waveinit import Learngene, ViTSpec, save_learngene


@pytest.mark.parametrize(
    "args, message",
    [
        (["spawn", "--depth", "2"], "the new model's size is missing: give --depth and --width"),
        (["spawn", "--depth", "2", "--width", "64", "--seed", "-1"], "'--seed'"),
        (["train", "--epochs", "0"], "'--epochs'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, message):
    result = wave(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_output_path_that_is_a_folder_is_refused_before_any_work(tmp_path, learngene_file):
    for args in (["spawn", "--depth", "2", "--width", "64", "--no-fit", "--learngene", learngene_file], ["train", "--epochs", "1"]):
        result = wave(*args, "--out", tmp_path)
        assert result.returncode == 2 and "is a folder" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_learngene_holding_a_tensor_it_should_not_is_refused_in_one_line(tmp_path):
    spec = ViTSpec(depth=2, width=64, heads=1, patch_size=4, image_size=8, channels=1, num_classes=10)
    path = tmp_path / "learngene.safetensors"
    save_learngene(path, Learngene(*random_factors(spec, 32, 2, dtype=np.float32), spec, 32))
    add_tensor(path, "foo", np.zeros(3, np.float32))
    for args in (["inspect", path], ["spawn", "--depth", "2", "--width", "64", "--no-fit", "--learngene", path, "--out", tmp_path / "m.safetensors"]):
        result = wave(*args)
        assert result.returncode == 2, result.stderr
        assert "learngene.safetensors: unexpected tensor 'foo' (not part of a 2x64 ViT's learngene)" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_distill_checks_its_options_before_training_an_ancestry(tmp_path):
    result = wave("distill", "--width", "100", cwd=tmp_path)
    assert result.returncode == 2 and "width 100 is not a multiple of the template side 64" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_core_imports_no_framework_and_help_imports_no_torch():
    code = (
        "import sys, waveinit, waveinit.spawning, waveinit.api, waveinit.io.inspect, waveinit.io.datasets, waveinit.bench.report\n"
        "assert not {'torch', 'typer', 'sklearn', 'matplotlib'} & set(sys.modules), sorted(sys.modules)\n"
        "from waveinit.cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = run_python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["train", "--depth", "1", "--width", "64", "--epochs", "1"],
                                     ["distill", "--depth", "1", "--width", "64", "--epochs", "1"]])
def test_resume_without_a_checkpoint_says_so_and_a_finished_run_says_that(tmp_path, command):
    out = tmp_path / "m.safetensors"
    nothing = wave(*command, "--out", out, "--resume", cwd=tmp_path)
    assert nothing.returncode == 2 and len(nothing.stderr.strip().splitlines()) == 1, nothing.stderr
    assert f"there is no checkpoint {out}.ckpt to resume" in nothing.stderr and "drop --resume" in nothing.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()  # nothing trained, not even a default ancestry
    out.write_bytes(b"finished")  # stands for the finished output: nothing reads it
    finished = wave(*command, "--out", out, "--resume", cwd=tmp_path)
    assert finished.returncode == 0 and "is finished" in finished.stderr and "nothing to do" in finished.stderr, finished.stderr
    assert out.read_bytes() == b"finished"
