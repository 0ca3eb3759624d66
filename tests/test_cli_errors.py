"""The command line's contract for bad input, and the house rules on imports."""


import pytest

from helpers import run_python, wave


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
