"""A family of sizes in one command (`wave spawn --sizes`, `waveinit.spawn_family`): one model file
per size sharing one load of the learngene, the data and the teacher, the family table on screen
and in family.csv / family.json, refusal of existing files, and an interrupted family that keeps
what it finished and says the command that continues it."""

from __future__ import annotations

import csv
import json
import signal
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

import waveinit
from helpers import start_wave, wave
from waveinit.cli.main import app
from waveinit.errors import WaveError
from waveinit.io.files import load_learngene, load_model
from waveinit.spawning import size_for_params
from waveinit.training.interrupts import Interrupted

pytestmark = pytest.mark.slow  # every test spawns with a fit on digits

FIT = ["--fit-steps", "3", "--fit-samples", "200"]


def test_a_mixed_size_list_spawns_every_size_once_with_its_table(learngene_file, tmp_path):
    gene = load_learngene(learngene_file)
    out = tmp_path / "family"
    result = CliRunner().invoke(app, ["spawn", "--learngene", str(learngene_file), "--sizes", "1x64,2x128x4,vit_tiny,150k", *FIT,
                                      "--out-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    budget = size_for_params(150_000, gene.spec, gene.side)
    want = [(1, 64, 1), (2, 128, 4), (12, 192, 3), (*budget, max(1, budget[1] // 64))]
    rows = list(csv.DictReader(open(out / "family.csv")))
    assert [(int(r["depth"]), int(r["width"]), int(r["heads"])) for r in rows] == want
    assert [r["size"] for r in rows] == ["1x64", "2x128x4", "vit_tiny", "150k"]
    for row, (depth, width, heads) in zip(rows, want):
        model = load_model(out / row["file"])
        assert (model.spec.depth, model.spec.width, model.spec.heads) == (depth, width, heads)
        assert int(row["params"]) == model.spec.num_params()
        assert 0 <= float(row["data_free_accuracy"]) <= 1 and 0 <= float(row["fitted_accuracy"]) <= 1 and row["kept"] in ("fitted", "start")
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["file"] for r in printed["sizes"]] == [r["file"] for r in rows]
    assert json.loads((out / "family.json").read_text())["sizes"] == printed["sizes"]
    assert "the family" in result.output and "vit_tiny" in result.output


def test_each_member_is_the_single_spawn_of_its_size(learngene_file, tmp_path):
    family = waveinit.spawn_family(learngene_file, "1x64,2x64", tmp_path / "f", config=waveinit.configs.SpawnConfig(fit_steps=3, fit_samples=200))
    assert family.ran == 2
    for row in family.rows:
        alone = waveinit.spawn(learngene_file, row["depth"], row["width"], fit_steps=3, fit_samples=200)
        member = load_model(tmp_path / "f" / row["file"])
        for key, value in alone.state_dict.items():
            np.testing.assert_array_equal(member.state_dict[key], value, err_msg=key)


def test_an_existing_member_is_refused_unless_forced(learngene_file, tmp_path):
    out = tmp_path / "f"
    args = ["spawn", "--learngene", str(learngene_file), "--sizes", "1x64", *FIT, "--out-dir", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "exists: pass force=True (--force)" in refused.output
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0


@pytest.mark.parametrize("extra, message", [
    (["--depth", "2"], "drop --depth"),
    (["--out", "x.safetensors"], "drop --out"),
    (["--sizes", "1x64,banana"], "is none of DEPTHxWIDTH"),
])
def test_bad_family_options_are_one_line(learngene_file, tmp_path, extra, message):
    args = ["spawn", "--learngene", str(learngene_file), "--out-dir", str(tmp_path / "f")]
    result = CliRunner().invoke(app, [*args, *(extra if "--sizes" in extra else ["--sizes", "1x64", *extra])])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "f").exists()


def test_an_interrupted_family_keeps_what_it_finished_and_resumes(learngene_file, tmp_path):
    out = tmp_path / "f"
    config = waveinit.configs.SpawnConfig(fit_steps=3, fit_samples=200)

    def stop_after_first(row):
        raise Interrupted(signal.SIGINT)

    with pytest.raises(Interrupted) as e:
        waveinit.spawn_family(learngene_file, "1x64,2x64", out, config=config, on_size=stop_after_first)
    assert e.value.kept == f"1 of 2 sizes in {out}"
    kept = json.loads((out / "family.json").read_text())["sizes"]
    assert [r["size"] for r in kept] == ["1x64"]
    with pytest.raises(WaveError, match="resume=True"):  # the finished member is not overwritten by a plain rerun
        waveinit.spawn_family(learngene_file, "1x64,2x64", out, config=config)
    with pytest.raises(WaveError, match="other settings"):
        waveinit.spawn_family(learngene_file, "1x64,2x64", out, config=waveinit.configs.SpawnConfig(fit_steps=4), resume=True)
    again = waveinit.spawn_family(learngene_file, "1x64,2x64", out, config=config, resume=True)
    assert again.ran == 1 and [r["size"] for r in again.rows] == ["1x64", "2x64"] and again.rows[0] == kept[0]


def test_a_real_signal_stops_the_family_and_says_the_command_that_continues_it(learngene_file, tmp_path):
    out = tmp_path / "f"
    args = ["spawn", "--learngene", learngene_file, "--sizes", "1x64,2x64", "--fit-steps", "400", "--fit-samples", "200", "--fit-patience", "0",
            "--out-dir", out]
    process = start_wave(*args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / f"{learngene_file.stem}_d1_w64.safetensors"
    import time

    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    line = [line for line in stderr.splitlines() if line.strip()][-1]
    assert line.startswith(f"interrupted by SIGINT: kept 1 of 2 sizes in {out}; resume with: wave spawn ") and line.endswith(" --resume"), line
    resumed = wave(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 sizes spawned, 1 kept from before" in resumed.stderr


def test_a_family_of_a_learngene_of_several_sizes_starts_each_listed_size_from_its_own_scalers(ancestry, tmp_path):
    gene_path = tmp_path / "g.safetensors"
    assert CliRunner().invoke(app, ["distill", "--teacher", str(ancestry), "--sizes", "1x64,2x64", "--epochs", "1",
                                    "--out", str(gene_path)]).exit_code == 0
    family = waveinit.spawn_family(gene_path, "1x64,2x64,3x64", tmp_path / "f", fit=False)
    assert [r["auxiliary"] for r in family.rows] == ["1x64", "2x64", "2x64"]
