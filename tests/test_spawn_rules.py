"""The spawn rule's depth and width choices (`spawning.layer_positions`, `width_pooling`,
`project_scalers`) against plain NumPy references, and `choose` and the options end to end."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_spawn import AUX, random_learngene

from helpers import wave
from waveinit import WaveError, load_learngene, load_model, materialize
from waveinit.configs import DEPTH_RULES, WIDTH_RULES, SpawnConfig
from waveinit.io.datasets import load_dataset
from waveinit.selection import weight_selection
from waveinit.spawning import balance, depth_mixing, layer_positions, project_scalers, resample_scalers, spawn_factors, target_spec, width_pooling
from waveinit.spec import MATRIX_ROLES, ROLE_NAMES, ROLES, resized, scaler_shapes

depths = st.integers(1, 12)


@given(source=depths, target=depths, rule=st.sampled_from(DEPTH_RULES))
def test_every_depth_rule_gives_sorted_positions_inside_the_auxiliary(source, target, rule):
    positions = layer_positions(source, target, rule)
    assert len(positions) == target and positions == sorted(positions)
    assert all(0 <= p <= source - 1 for p in positions)
    if target == source:
        assert positions == list(range(source))
    mixing = depth_mixing(source, target, rule)
    np.testing.assert_allclose(mixing.sum(axis=1), 1.0)
    np.testing.assert_allclose(mixing @ np.arange(source), positions, atol=1e-12)  # each row blends around its position


@given(source=depths, target=depths)
def test_first_even_and_interpolate_positions(source, target):
    if target <= source:
        assert layer_positions(source, target, "first") == list(range(target))
    else:  # deeper: "first" repeats layers as "relative" does
        assert layer_positions(source, target, "first") == layer_positions(source, target, "relative")
    even, interpolate = layer_positions(source, target, "even"), layer_positions(source, target, "interpolate")
    if target >= 2:
        assert even[0] == 0 and even[-1] == source - 1  # the first and the last layer are kept
        np.testing.assert_allclose(np.diff(interpolate), (source - 1) / (target - 1))
    assert all(abs(e - p) <= 0.5 for e, p in zip(even, interpolate))  # "even" rounds the interpolation's positions


def test_depth_rules_for_the_issues_cases():
    assert layer_positions(4, 2, "relative") == [1, 3]  # today's: drops layer 0
    assert layer_positions(4, 2, "first") == [0, 1]
    assert layer_positions(6, 2, "even") == [0, 5]
    assert layer_positions(6, 8, "even") == [0, 1, 1, 2, 3, 4, 4, 5]
    assert layer_positions(6, 4, "interpolate") == pytest.approx([0, 5 / 3, 10 / 3, 5])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), depth=st.integers(1, 6), rule=st.sampled_from(DEPTH_RULES))
def test_depth_rules_blend_the_auxiliary_layers_scalers(seed, depth, rule):
    lg = random_learngene(seed=seed)
    target = AUX.replace(depth=depth)
    mapped = resample_scalers(lg.scalers, AUX, target, 16, depth_rule=rule)
    def blend(s, position):
        low, frac = int(position), position - int(position)
        return s[low] if frac == 0 else (1 - frac) * s[low] + frac * s[low + 1]

    for role in ROLES:
        s = lg.scalers[role.name]
        expected = np.stack([blend(s, p) for p in layer_positions(AUX.depth, depth, rule)]) if role.per_layer else s
        np.testing.assert_allclose(mapped[role.name], expected, rtol=1e-12, atol=1e-12)


@given(source=st.integers(1, 12), target=st.integers(1, 12), rule=st.sampled_from(WIDTH_RULES))
def test_width_pooling_duplicates_when_wider_and_pools_each_block_once_when_narrower(source, target, rule):
    pooling = width_pooling(source, target, rule)
    np.testing.assert_allclose(pooling.sum(axis=1), 1.0)
    if target >= source or rule != "mean":  # one source block per target block: a pick
        assert ((pooling == 1).sum(axis=1) == 1).all()
        np.testing.assert_array_equal(pooling.argmax(axis=1), [i * source // target for i in range(target)])
    else:  # every source block feeds exactly one target block, with equal weights within it
        assert ((pooling > 0).sum(axis=0) == 1).all()
        for row in pooling:
            np.testing.assert_allclose(row[row > 0], 1 / (row > 0).sum())


def test_mean_width_rule_averages_the_blocks_and_keeps_the_fan_in_scale():
    lg = random_learngene(seed=3)
    target = AUX.replace(width=16, heads=1)  # 2 blocks -> 1
    s = lg.scalers["mlp.fc2.weight"]  # (depth, N, a, b): b is the fan-in axis (mlp blocks 8 -> 4), a the output (2 -> 1)
    mapped = resample_scalers({"mlp.fc2.weight": s}, AUX, target, 16, width_rule="mean")["mlp.fc2.weight"]
    expected = s.reshape(*s.shape[:2], 1, 2, 4, 2).mean(axis=(3, 5)) * 2  # mean over each pair, x 2 on the fan-in axis
    np.testing.assert_allclose(mapped, expected, rtol=1e-12)


def lstsq_reference(state, spec, side, templates, order="st"):
    """Per role and layer: np.linalg.lstsq of the whole weight on the design matrix whose columns
    are the weights each single scaler entry makes (np.kron of a template and a unit grid)."""
    out = {}
    for role in ROLES:
        n, grid = templates[role.name].shape[0], role.scaler_shape(spec, side)
        columns = []
        for t in range(n):
            for index in np.ndindex(*grid):
                unit = np.zeros(grid)
                unit[index] = 1.0
                pair = (unit, templates[role.name][t]) if order == "st" else (templates[role.name][t], unit)
                columns.append(np.kron(*pair).reshape(-1))
        design = np.stack(columns, axis=1)
        layers = [np.linalg.lstsq(design, np.asarray(state[role.key(layer)]).reshape(-1), rcond=None)[0].reshape(n, *grid)
                  for layer in (range(spec.depth) if role.per_layer else [None])]
        out[role.name] = np.stack(layers) if role.per_layer else layers[0]
    return out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), depth=st.integers(1, 5), rule=st.sampled_from(DEPTH_RULES), order=st.sampled_from(["st", "ts"]))
def test_project_is_the_least_squares_fit_of_the_selected_weights(seed, depth, rule, order):
    lg = random_learngene(seed=seed, n=2)
    templates, scalers = balance(lg.templates, lg.scalers)
    target = AUX.replace(depth=depth, width=16, heads=1)
    projected = project_scalers(templates, scalers, AUX, target, 16, depth_rule=rule, order=order)
    deep = resized(AUX, depth=depth)
    dense = materialize(deep, 16, templates, resample_scalers(scalers, AUX, deep, 16, rule), order)
    expected = lstsq_reference(weight_selection(dense, deep, target), target, 16, templates, order)
    assert {k: v.shape for k, v in projected.items()} == scaler_shapes(target, 16, 2)
    for name in expected:
        np.testing.assert_allclose(projected[name], expected[name], rtol=1e-7, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_project_at_the_auxiliary_size_gives_back_its_scalers(seed):
    lg = random_learngene(seed=seed, n=2)
    templates, scalers = balance(lg.templates, lg.scalers)
    projected = project_scalers(templates, scalers, AUX, AUX, 16, order="st")
    for name in scalers:
        np.testing.assert_allclose(projected[name], scalers[name], rtol=1e-8, atol=1e-10)


def test_project_runs_on_torch_tensors_as_on_numpy():
    lg = random_learngene(seed=5, n=2)
    templates, scalers = balance(lg.templates, lg.scalers)
    target = AUX.replace(depth=2, width=16, heads=1)
    expected = project_scalers(templates, scalers, AUX, target, 16, order="st")
    actual = project_scalers({k: torch.from_numpy(v) for k, v in templates.items()}, {k: torch.from_numpy(v) for k, v in scalers.items()},
                             AUX, target, 16, order="st")
    for name in expected:
        np.testing.assert_allclose(actual[name].numpy(), expected[name], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("width_rule", WIDTH_RULES)
@pytest.mark.parametrize("depth_rule", DEPTH_RULES)
def test_every_rule_spawns_every_shape_and_new_data(depth_rule, width_rule):
    lg = random_learngene(seed=1)
    for target in (AUX.replace(depth=1, width=16, heads=1), AUX.replace(depth=5, width=48, heads=3), AUX.replace(depth=2, width=16, heads=1,
                                                                                                               num_classes=7)):
        templates, scalers, fresh = spawn_factors(lg, target, depth_rule=depth_rule, width_rule=width_rule)
        state = materialize(target, 16, templates, scalers)
        assert all(np.isfinite(v).all() for v in state.values())
        assert fresh == ({"head.weight", "head.bias"} if target.num_classes == 7 else set())


def test_bad_rules_are_refused_by_name():
    with pytest.raises(WaveError, match="depth rule must be one of relative, first, even, interpolate, choose"):
        SpawnConfig(depth_rule="deepest")
    with pytest.raises(WaveError, match="width rule must be one of pick, mean, project"):
        SpawnConfig(width_rule="crop")
    with pytest.raises(WaveError, match="depth rule must be one of"):
        layer_positions(4, 2, "choose")  # "choose" needs data: the spawn's fit, not the pure rule


def test_choose_picks_the_candidate_with_the_lowest_loss_on_the_fit_batches(learngene_file):
    from waveinit.backends.torch import TemplatedViT
    from waveinit.tasks import choose_depth_rule, fit_images
    from waveinit.training.evaluation import evaluate

    gene = load_learngene(learngene_file)
    data = load_dataset("digits")
    target = target_spec(gene, 2, gene.spec.width)
    config = SpawnConfig(depth_rule="choose", choose_batches=2, batch_size=32)
    rule, losses = choose_depth_rule(gene, target, data, config, device="cpu")
    (images, labels), _ = fit_images(data, config)
    for candidate in DEPTH_RULES:
        templates, scalers, _ = spawn_factors(gene, target, 0, depth_rule=candidate)
        model = TemplatedViT.from_factors(target, gene.side, templates, scalers, gene.order)  # the learngene's order
        assert losses[candidate] == pytest.approx(evaluate(model, images[:64], labels[:64], 256, "cpu")["loss"], rel=1e-6)
    assert losses[rule] == min(losses.values())


def test_spawn_records_its_rules_and_the_cli_refuses_choose_without_a_fit(learngene_file, tmp_path):
    out = tmp_path / "m.safetensors"
    done = wave("spawn", "--depth", "2", "--width", "64", "--learngene", learngene_file, "--no-fit", "--depth-rule", "even",
                "--width-rule", "project", "--out", out)
    assert done.returncode == 0, done.stderr
    model = load_model(out)
    assert (model.provenance["depth_rule"], model.provenance["width_rule"]) == ("even", "project")
    from waveinit.spawning import spawn_state_dict

    expected, _ = spawn_state_dict(load_learngene(learngene_file), model.spec, depth_rule="even", width_rule="project")
    for key in expected:
        np.testing.assert_array_equal(model.state_dict[key], expected[key])
    refused = wave("spawn", "--depth", "2", "--width", "64", "--learngene", learngene_file, "--no-fit", "--depth-rule", "choose",
                   "--out", tmp_path / "n.safetensors")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "'choose' scores candidates on the fit's data" in refused.stderr and not (tmp_path / "n.safetensors").exists()
    bad = wave("spawn", "--depth", "2", "--width", "64", "--learngene", learngene_file, "--no-fit", "--width-rule", "crop",
               "--out", tmp_path / "b.safetensors")
    assert bad.returncode == 2 and "width rule must be one of pick, mean, project" in bad.stderr


def test_a_template_first_learngene_round_trips_and_spawns_with_its_order(tmp_path):
    from waveinit import save_learngene
    from waveinit.learngene import Learngene
    from waveinit.spawning import spawn_state_dict

    lg = random_learngene(seed=2)
    gene = Learngene(lg.templates, lg.scalers, AUX, 16, {"data": "x"}, order="ts")
    save_learngene(tmp_path / "ts.safetensors", gene)
    back = load_learngene(tmp_path / "ts.safetensors")
    assert back.order == "ts"
    state, _ = spawn_state_dict(back, AUX)  # the auxiliary's own size: its own weights, in its order
    expected = materialize(AUX, 16, *balance(lg.templates, lg.scalers), order="ts")
    other = materialize(AUX, 16, lg.templates, lg.scalers, order="st")
    for key in expected:
        np.testing.assert_allclose(state[key], expected[key], rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(expected[k], other[k]) for k in expected)  # the order matters
    with pytest.raises(WaveError, match="Kronecker order must be one of st, ts"):
        Learngene(lg.templates, lg.scalers, AUX, 16, order="ST")


def test_distill_with_template_first_order_writes_a_ts_learngene(tmp_path):
    from waveinit.configs import DistillConfig, TrainConfig
    from waveinit.tasks import distill, random_vit, spec_for

    data = load_dataset("digits", subset=200)
    teacher = random_vit(spec_for(data, 1, 32, 1), seed=0)
    result = distill(teacher, data, teacher.spec, TrainConfig(epochs=1, batch_size=64), DistillConfig(side=16, templates=2, order="ts"),
                     out=tmp_path / "g.safetensors", device="cpu")
    gene = load_learngene(tmp_path / "g.safetensors")
    assert gene.order == "ts" and result.learngene.order == "ts"
    # init nearest-kron in this order too: one step that moves nothing leaves the teacher's nearest kron(T, S) sums
    from waveinit import learngene_from_weights, materialize
    from waveinit.backends.torch import dense_numpy

    near = distill(teacher, data, teacher.spec, TrainConfig(max_steps=1, batch_size=32, lr=1e-12, weight_decay=0.0),
                   DistillConfig(side=16, templates=2, order="ts", init="nearest-kron"), out=tmp_path / "h.safetensors", device="cpu")
    want = learngene_from_weights(dense_numpy(teacher.state_dict()), teacher.spec, 16, 2, "ts")
    got = materialize(teacher.spec, 16, near.learngene.templates, near.learngene.scalers, "ts")
    for key, value in materialize(teacher.spec, 16, want.templates, want.scalers, "ts").items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


DENSE = [r for r in ROLE_NAMES if r not in MATRIX_ROLES]


def matrices_only(seed=4, spec=AUX):
    """A learngene templating only the four block matrices, its other parameters dense."""
    from waveinit.learngene import Learngene
    from waveinit.spawning import fresh_dense

    lg = random_learngene(spec, seed=seed)
    dense = {k: 1 + v for k, v in fresh_dense(spec, DENSE, seed).items()}  # away from timm's init, so a copy is told from a draw
    return Learngene({k: lg.templates[k] for k in MATRIX_ROLES}, {k: lg.scalers[k] for k in MATRIX_ROLES}, spec, 16, {}, "st", dense)


def test_a_matrices_only_learngene_round_trips_and_rebuilds_its_auxiliary_exactly(tmp_path):
    from waveinit import save_learngene
    from waveinit.spawning import spawn_state_dict

    gene = matrices_only()
    save_learngene(tmp_path / "m.safetensors", gene)
    back = load_learngene(tmp_path / "m.safetensors")
    assert set(back.dense) == set(DENSE) and set(back.templates) == set(MATRIX_ROLES)
    state, fresh = spawn_state_dict(back, AUX)
    expected = materialize(AUX, 16, gene.templates, gene.scalers, dense=gene.dense)
    assert fresh == set()
    for key in expected:
        np.testing.assert_allclose(state[key], expected[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state["blocks.1.norm1.weight"], gene.dense["norm1.weight"][1])


@pytest.mark.parametrize("k", [1, 2])
def test_matrices_only_k_fold_wider_spawn_still_computes_the_auxiliary_function(k):
    from waveinit.backends import numpy as ref
    from waveinit.spawning import spawn_state_dict

    gene = matrices_only(seed=k)
    target = AUX.replace(width=32 * k, heads=2 * k)
    state, _ = spawn_state_dict(gene, target)
    images = np.random.default_rng(0).standard_normal((3, 1, 4, 4))
    expected = ref.forward(materialize(AUX, 16, gene.templates, gene.scalers, dense=gene.dense), AUX, images)
    np.testing.assert_allclose(ref.forward(state, target, images), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width_rule", WIDTH_RULES)
def test_matrices_only_dense_roles_follow_the_width_rule(width_rule):
    from waveinit.spawning import spawn_dense

    gene = matrices_only()
    target = AUX.replace(depth=2, width=16, heads=1)
    dense = spawn_dense(gene, target, depth_rule="first", width_rule=width_rule)
    for role in ("norm2.weight", "mlp.fc2.bias"):  # width-long vectors: (2, 32), layers 0 and 1, two blocks of 16
        x = gene.dense[role][:2]
        if width_rule == "project":  # weight selection's elements: every other entry
            np.testing.assert_array_equal(dense[role], x[:, ::2])
        elif width_rule == "pick":
            np.testing.assert_array_equal(dense[role], x[:, :16])
        else:
            np.testing.assert_allclose(dense[role], (x[:, :16] + x[:, 16:]) / 2)


def test_distill_matrices_only_writes_dense_roles_and_the_fit_keeps_them_frozen(tmp_path):
    from waveinit.configs import DistillConfig, TrainConfig
    from waveinit.tasks import distill, fit_scalers, random_vit, spec_for

    data = load_dataset("digits", subset=200)
    teacher = random_vit(spec_for(data, 2, 32, 1), seed=0)
    distill(teacher, data, teacher.spec, TrainConfig(epochs=1, batch_size=64), DistillConfig(side=16, templates=2, templated="matrices"),
            out=tmp_path / "g.safetensors", device="cpu")
    gene = load_learngene(tmp_path / "g.safetensors")
    assert set(gene.templates) == set(MATRIX_ROLES) and set(gene.dense) == set(DENSE)
    target = target_spec(gene, 1, 32)
    result = fit_scalers(gene, target, data, SpawnConfig(depth_rule="relative", fit_steps=3, fit_samples=100, batch_size=32), device="cpu")
    fitted = result.factors.dense_tensors()
    assert not any(t.requires_grad for t in fitted.values())
    np.testing.assert_array_equal(fitted["norm1.weight"].detach().numpy(), gene.dense["norm1.weight"][1:])  # relative: layer 1 of 2
    assert set(result.factors.scalers.keys()) == {k.replace(".", "_") for k in MATRIX_ROLES}


def test_fit_keep_best_keeps_an_epoch_end_no_worse_on_the_held_out_images_than_the_last(learngene_file):
    from waveinit.tasks import fit_images, fit_scalers
    from waveinit.training.evaluation import evaluate

    gene, data = load_learngene(learngene_file), load_dataset("digits")
    target = target_spec(gene, 2, 64)
    best = SpawnConfig(fit_steps=40, fit_samples=200, batch_size=32, lr=0.3, fit_keep="best", fit_patience=0)
    last = SpawnConfig(fit_steps=40, fit_samples=200, batch_size=32, lr=0.3, fit_keep="last", fit_patience=0)
    kept, final = fit_scalers(gene, target, data, best, device="cpu"), fit_scalers(gene, target, data, last, device="cpu")
    assert final.best_step is None
    assert kept.best_step in range(5, 41, 5)  # 160 fit images in batches of 32: an epoch end every 5 steps
    _, held = fit_images(data, best)
    loss = lambda result: evaluate(result.model, *held, 256, "cpu")["loss"]  # noqa: E731
    assert loss(kept) <= loss(final) + 1e-6  # the same run, so the last epoch end was one of the candidates
    if kept.best_step == 40:
        assert loss(kept) == pytest.approx(loss(final), abs=1e-6)
