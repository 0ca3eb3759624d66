"""Learngenes as Hub artifacts: `wave export LEARNGENE --format hub` writes a folder ready for
`huggingface_hub.upload_folder`, and `--learngene` / `wave inspect` read it back from the folder,
by Hub id through a real cache layout with HF_HUB_OFFLINE=1, or at a pinned revision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from test_timm import lay_out_hub_cache

from helpers import ENV, wave
from waveinit.io.files import load_learngene, load_model
from waveinit.io.share import is_learngene_folder

pytestmark = pytest.mark.slow  # a distilled learngene (conftest.learngene_file)


def test_the_hub_folder_holds_the_learngene_its_config_and_a_model_card(learngene_file, tmp_path):
    out = tmp_path / "hub"
    done = wave("export", learngene_file, "--format", "hub", "--out", out, "--license", "apache-2.0", "--repo-id", "someone/digits-lg")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "learngene.safetensors"]
    assert (out / "learngene.safetensors").read_bytes() == learngene_file.read_bytes()
    gene = load_learngene(learngene_file)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "waveinit.learngene" and config["format_version"] == 1
    assert (config["template_side"], config["kron_order"], config["templates"]) == (gene.side, gene.order, gene.counts)
    assert (config["auxiliary"]["depth"], config["auxiliary"]["width"]) == (gene.spec.depth, gene.spec.width)
    card = ModelCard.load(out / "README.md")  # huggingface_hub's own reader
    assert card.data.library_name == "waveinit" and card.data.license == "apache-2.0" and "learngene" in card.data.tags
    assert "wave spawn --learngene hf-hub:someone/digits-lg" in card.text
    assert f"{100 * gene.provenance['test_accuracy']:.2f}%" in card.text
    meta = yaml.safe_load(out.joinpath("README.md").read_text().split("---")[1])
    assert meta["library_name"] == "waveinit"
    assert is_learngene_folder(out) and not is_learngene_folder(tmp_path)


def test_a_model_is_not_exported_as_a_learngene_and_an_old_folder_is_not_replaced_silently(learngene_file, tmp_path):
    out = tmp_path / "hub"
    assert wave("export", learngene_file, "--format", "hub", "--out", out).returncode == 0
    again = wave("export", learngene_file, "--format", "hub", "--out", out)
    assert again.returncode == 2 and "exists: pass --force" in again.stderr
    model = tmp_path / "m.safetensors"
    assert wave("spawn", "--learngene", learngene_file, "--depth", "1", "--width", "64", "--no-fit", "--out", model).returncode == 0
    refused = wave("export", model, "--format", "hub", "--out", tmp_path / "m-hub")
    assert refused.returncode == 2 and "is not a learngene" in refused.stderr.strip().splitlines()[-1]


def test_spawning_from_the_folder_and_from_the_hub_offline_gives_the_same_model(learngene_file, tmp_path):
    folder = tmp_path / "hub"
    assert wave("export", learngene_file, "--format", "hub", "--out", folder).returncode == 0
    cache = tmp_path / "cache"
    commit = lay_out_hub_cache(cache, "someone/digits-lg", folder)
    env = {**ENV, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    sources = {"file": str(learngene_file), "folder": str(folder), "id": "someone/digits-lg", "prefixed": f"hf-hub:someone/digits-lg@{commit}"}
    models = {}
    for name, source in sources.items():
        out = tmp_path / f"{name}.safetensors"
        done = wave("spawn", "--learngene", source, "--depth", "2", "--width", "64", "--no-fit", "--out", out, env=env)
        assert done.returncode == 0, (name, done.stderr)
        models[name] = load_model(out).state_dict
    for name in ("folder", "id", "prefixed"):
        for key, value in models["file"].items():
            np.testing.assert_array_equal(models[name][key], value, err_msg=f"{name} {key}")
    shown = wave("inspect", "hf-hub:someone/digits-lg", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["kind"] == "learngene" and info["hub"] == f"hf:someone/digits-lg@{commit}"
    family = wave("spawn", "--learngene", "someone/digits-lg", "--sizes", "1x64,2x64", "--no-fit", "--out-dir", tmp_path / "fam", env=env)
    assert family.returncode == 0, family.stderr
    missing = wave("spawn", "--learngene", "someone/not-cached", "--depth", "1", "--width", "64", "--no-fit", env=env)
    assert missing.returncode == 2 and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in missing.stderr.strip().splitlines()[-1]
