"""Every example runs, in its quick mode, and prints what it promises."""

import json
from pathlib import Path

import pytest

from helpers import run_python

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args, cwd):
    result = run_python(*args, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kron_basics(tmp_path):
    out = run(EXAMPLES / "kron_basics.py", cwd=tmp_path)
    assert "kron_matmul matches the dense product: True" in out


@pytest.mark.slow
def test_spawn_sizes_quick_covers_the_size_grid_on_digits(tmp_path):
    out = run(EXAMPLES / "spawn_sizes.py", "--quick", "--workdir", tmp_path / "w", cwd=tmp_path)
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    sizes = {(r["depth"], r["width"]) for r in results["rows"]}
    assert sizes == {(d, w) for d in (2, 4, 6) for w in (64, 128, 192)}
    mean_fit = sum(r["wave_fit"] for r in results["rows"]) / len(results["rows"])
    assert mean_fit > 0.15, results  # well above chance (0.1) after a 20-step fit from a tiny learngene
    assert "mean over sizes" in out


def test_array_api_embedding_matches_the_reference_on_every_library(tmp_path):
    out = run(EXAMPLES / "array_api_embedding.py", cwd=tmp_path)
    diffs = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "max |diff|" in line and line.startswith(("array_api_strict", "torch"))]
    assert len(diffs) == 2, out
    assert max(diffs) < 1e-12, out
    assert float(out.split("np.kron loop max |diff| ")[1].split(",")[0]) < 1e-12, out


@pytest.mark.slow
def test_new_dataset_quick_spawns_fashion_templates_for_digits(tmp_path):
    run(EXAMPLES / "new_dataset.py", "--quick", "--workdir", tmp_path / "w", cwd=tmp_path)
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert (results["learngene_data"], results["target"]) == ("fashion-mnist", "digits")
    (row,) = results["rows"]
    assert {"patch_embed.proj.weight", "head.weight"} <= set(row["fresh_roles"])  # other image size, other classes
    assert len(row["wave"]) == len(row["random"]) == 4  # before training, then 3 epochs
    assert row["wave"][0] > 0.2, row  # the scaler fit on digits alone lifts it well above chance (0.1)
