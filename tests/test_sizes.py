"""Templates distilled through several sizes (`wave distill --sizes`, protocol v4 item 3) and the
size lists the commands take."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from waveinit import ViTSpec, scaler_shapes
from waveinit.backends.torch import TemplatedFamily, ViT, load_state_dict
from waveinit.cli.main import app
from waveinit.configs import DistillConfig, TrainConfig
from waveinit.errors import WaveError
from waveinit.io.datasets import load_dataset
from waveinit.io.files import load_learngene, save_learngene
from waveinit.learngene import Learngene
from waveinit.sizes import parse_size, parse_sizes
from waveinit.spawning import size_for_params, spawn_state_dict
from waveinit.tasks import distill, per_member, random_vit, spec_for

LIKE = ViTSpec(depth=6, width=192, heads=3, patch_size=7, image_size=28, channels=1, num_classes=10)


# ----------------------------------------------------------------------------- size lists

def test_a_mixed_size_list_parses_in_its_order():
    sizes = parse_sizes("2x64, 6x384x6,vit_tiny,300k", LIKE, 64)
    assert [(s.depth, s.width, s.heads) for s in sizes[:3]] == [(2, 64, None), (6, 384, 6), (12, 192, 3)]
    budget = sizes[3]
    assert (budget.depth, budget.width) == size_for_params(300_000, LIKE, 64) and budget.asked == "300k"
    million = parse_size("1.5M", LIKE, 64)
    assert (million.depth, million.width) == size_for_params(1_500_000, LIKE, 64) == (parse_size("1500000", LIKE, 64).depth,
                                                                                      parse_size("1500000", LIKE, 64).width)


@pytest.mark.parametrize("text, message", [
    ("2x64,banana", "'banana' is none of"),
    ("2x64,2x64x1", "both 2x64"),
    ("0x64", "at least 1"),
    (" , ", "no sizes given"),
])
def test_bad_size_lists_say_what_is_wrong(text, message):
    with pytest.raises(WaveError, match=message):
        parse_sizes(text, LIKE, 64)


# ----------------------------------------------------------------------------- the learngene of several sizes

def _family_gene(seed=0) -> Learngene:
    big = ViTSpec(depth=2, width=32, heads=2, patch_size=2, image_size=8, channels=1, num_classes=10)
    small = big.replace(depth=1, width=16, heads=1)
    family = TemplatedFamily([small, big], side=16, n_templates=2, seed=seed, order="ts")
    return family.to_learngene({"data": "digits"})


def test_a_family_shares_one_template_bank_and_keeps_a_scaler_set_per_size():
    gene = _family_gene()
    assert list(gene.sizes) == ["2x32", "1x16"]  # the largest is the main size
    spec, scalers = gene.auxiliaries["1x16"]
    assert {k: v.shape for k, v in scalers.items()} == scaler_shapes(spec, gene.side, gene.counts)
    assert gene.num_scaler_params() == sum(v.size for v in gene.scalers.values()) + sum(v.size for v in scalers.values())


def test_a_family_learngene_round_trips_through_its_file(tmp_path):
    gene = _family_gene()
    save_learngene(tmp_path / "g.safetensors", gene)
    back = load_learngene(tmp_path / "g.safetensors")
    assert back.sizes == gene.sizes and back.order == "ts"
    for name, (_, scalers) in gene.auxiliaries.items():
        for role, s in scalers.items():
            np.testing.assert_array_equal(back.auxiliaries[name][1][role], s)


def test_a_listed_size_spawns_as_its_own_auxiliary_and_others_from_the_nearest():
    gene = _family_gene()
    small_spec, small_scalers = gene.auxiliaries["1x16"]
    family = TemplatedFamily([small_spec, gene.spec], 16, 2, order="ts")
    # the member as distilled, and the data-free spawn of its size: the same function
    with torch.no_grad():
        member = family.members[1]
        for role, s in small_scalers.items():
            member.scalers[role.replace(".", "_")].copy_(torch.as_tensor(s))
        for role, t in gene.templates.items():  # the bank is shared: this sets every member's
            member.templates[role.replace(".", "_")].copy_(torch.as_tensor(t))
    images = torch.randn(5, 1, 8, 8)
    spawned, _ = spawn_state_dict(gene, small_spec)
    member.eval()
    torch.testing.assert_close(load_state_dict(ViT(small_spec), spawned).eval()(images), member(images), atol=1e-5, rtol=1e-4)
    assert gene.source_for(small_spec.replace(depth=2)).spec == small_spec  # nearer in parameters than 2x32
    assert gene.source_for(gene.spec.replace(depth=3)).spec == gene.spec
    assert gene.source_for(gene.spec).auxiliaries == {}


def test_mislabelled_auxiliaries_are_refused():
    gene = _family_gene()
    spec, scalers = gene.auxiliaries["1x16"]
    with pytest.raises(WaveError, match="named DEPTHxWIDTH"):
        Learngene(gene.templates, gene.scalers, gene.spec, gene.side, order="ts", auxiliaries={"2x16": (spec, scalers)})
    with pytest.raises(WaveError, match="differ in depth or width"):
        TemplatedFamily([spec, spec], 16, 2, order="st")


def test_the_family_loss_is_the_mean_of_its_members_losses():
    logits = torch.randn(3, 4, 10)
    labels = torch.randint(0, 10, (4,))
    ce = lambda out, batch, y, idx: torch.nn.functional.cross_entropy(out, y, reduction="none")  # noqa: E731
    want = sum(ce(m, None, labels, None) for m in logits) / 3
    torch.testing.assert_close(per_member(ce)(logits, None, labels, None), want)


@pytest.mark.slow
def test_distilling_through_several_sizes_trains_the_shared_templates_through_each(tmp_path):
    torch.manual_seed(0)
    data = load_dataset("digits", seed=0, subset=256)
    teacher = random_vit(spec_for(data, 2, 32, 2), 0)
    main, other = spec_for(data, 2, 32, 2), spec_for(data, 1, 16, 1)
    out = tmp_path / "g.safetensors"
    distill(teacher, data, main, TrainConfig(epochs=1, batch_size=64, max_steps=3), DistillConfig(side=16, templates=2), out=out, sizes=(other,))
    gene = load_learngene(out)
    assert list(gene.sizes) == ["2x32", "1x16"] and gene.provenance["distill"]["sizes"] == ["1x16"]
    fresh = TemplatedFamily([main, other], 16, 2, seed=0, order="ts")  # the distillation's start
    start_small = fresh.members[1].role_tensors()[1]
    moved = [role for role, s in gene.auxiliaries["1x16"][1].items() if not np.allclose(s, start_small[role].detach().numpy())]
    assert moved, "the small auxiliary's scalers did not train"
    # a spawn of the small size starts from its own scalers
    assert spawn_state_dict(gene, other)[0].keys() == set(ViT(other).state_dict())


def test_wave_distill_sizes_on_the_command_line(tmp_path, ancestry):
    out = tmp_path / "g.safetensors"
    result = CliRunner().invoke(app, ["distill", "--teacher", str(ancestry), "--sizes", "1x64,2x64", "--epochs", "1", "--out", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert list(load_learngene(out).sizes) == ["2x64", "1x64"]
    refused = CliRunner().invoke(app, ["distill", "--teacher", str(ancestry), "--sizes", "1x64", "--depth", "2", "--out", str(tmp_path / "h")])
    assert refused.exit_code == 2 and "leave out --depth" in refused.output
