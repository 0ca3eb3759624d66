"""`--print-config` and `--config FILE.toml`: every command's settings as a file that reads back
to the same settings, the command line over the file, and a bad file refused in one line."""

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest
from typer.testing import CliRunner

from waveinit import load_model
from waveinit.cli.main import app
from waveinit.configs import COMMAND_FINETUNE, COMMAND_TRAIN, DistillConfig, SpawnConfig

runner = CliRunner()

# Per command, options that move settings of several tables away from their defaults.
GIVEN = {
    "train": ["--epochs", "3", "--lr", "0.0005", "--depth", "2", "--width", "64", "--reprob", "0.25", "--model-ema", "--data", "fashion-mnist"],
    "distill": ["--kron-order", "st", "--no-cache", "--templates", "2", "--teacher", "t.safetensors", "--sizes", "2x64,4x128"],
    "spawn": ["--depth", "4", "--width", "128", "--fit-patience", "2", "--depth-rule", "first", "--no-fit", "--threads", "1"],
    "bench": ["--quick", "--depths", "2,4", "--lrs", "1e-4,3e-4", "--sweep-one-size", "--family-validation", "0.1"],
}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def printed(*args) -> str:
    result = run(*args, "--print-config")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", list(GIVEN))
def test_print_config_reads_back_to_the_same_settings(command, tmp_path):
    text = printed(command, *GIVEN[command])
    tomllib.loads(text)  # valid TOML
    path = tmp_path / "settings.toml"
    path.write_text(text)
    assert printed(command, "--config", path) == text  # the file alone gives the same settings
    assert printed(command) != text  # and they are not the defaults


def test_the_file_holds_the_given_values_and_the_defaults_from_the_configs():
    train = tomllib.loads(printed("train", *GIVEN["train"]))
    assert (train["train"]["epochs"], train["train"]["lr"], train["train"]["reprob"], train["train"]["model_ema"]) == (3, 0.0005, 0.25, True)
    assert train["train"]["batch_size"] == COMMAND_TRAIN.batch_size and train["data"]["data"] == "fashion-mnist"
    assert "subset" not in train["data"]  # unset stays unset (a comment)
    distill = tomllib.loads(printed("distill"))["distill"]
    assert distill["order"] == DistillConfig().order and distill["cache_teacher"] is DistillConfig().cache_teacher
    spawn = tomllib.loads(printed("spawn"))["spawn"]
    assert (spawn["fit_steps"], spawn["fit_patience"], spawn["lr"]) == (SpawnConfig().fit_steps, SpawnConfig().fit_patience, SpawnConfig().lr)


def test_the_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('[train]\nepochs = 7\nlr = 1\n[model]\nwidth = 128\n')
    settings = tomllib.loads(printed("train", "--config", path, "--epochs", "2"))
    assert (settings["train"]["epochs"], settings["train"]["lr"], settings["model"]["width"]) == (2, 1.0, 128)


def test_wave_train_from_init_keeps_fine_tuning_defaults_unless_given(tmp_path):
    tuned = tomllib.loads(printed("train", "--init", "m.safetensors"))["train"]
    assert (tuned["epochs"], tuned["lr"]) == (COMMAND_FINETUNE.epochs, COMMAND_FINETUNE.lr)
    path = tmp_path / "t.toml"
    path.write_text('[model]\ninit = "m.safetensors"\n[train]\nlr = 0.01\n')
    from_file = tomllib.loads(printed("train", "--config", path))["train"]
    assert (from_file["epochs"], from_file["lr"]) == (COMMAND_FINETUNE.epochs, 0.01)


@pytest.mark.parametrize("content, message", [
    ("[trian]\nepochs = 1\n", "unknown table [trian]"),
    ("[train]\nepocs = 1\n", "no setting 'epocs'"),
    ('[train]\nepochs = "ten"\n', "epochs must be an integer"),
    ("[train]\nlr = -1\n", "lr must be at least 0.0"),
    ("[train]\nsmoothing = 0.999\n", "smoothing must be at most 0.99"),
    ("epochs = 3\n", "'epochs' is not a table"),
    ("[train\n", "not valid TOML"),
])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    result = run("train", "--config", path)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_file_says_how_to_make_one(tmp_path):
    result = run("spawn", "--config", tmp_path / "none.toml")
    assert result.exit_code == 2 and "no such file" in result.output and "--print-config" in result.output


def test_the_output_records_the_settings_it_ran_with(tmp_path):
    # A data-free spawn from the shipped learngene, its rules read from a file.
    path = tmp_path / "spawn.toml"
    path.write_text('[model]\nlearngene = "fashion-mnist"\ndepth = 2\nwidth = 64\nno_fit = true\n[spawn]\ndepth_rule = "first"\n')
    out = tmp_path / "vit.safetensors"
    result = run("spawn", "--config", path, "--out", out)
    assert result.exit_code == 0, result.output
    provenance = load_model(out).provenance
    assert provenance["depth_rule"] == "first" and provenance["settings"]["spawn"]["depth_rule"] == "first"
    assert provenance["settings"]["model"] == {**provenance["settings"]["model"], "depth": 2, "width": 64, "out": str(out)}
    assert tomllib.loads(printed("spawn", "--config", path, "--out", out)) == {
        table: {k: v for k, v in values.items() if v is not None} for table, values in provenance["settings"].items()}
