"""Learngene and model files: exact round trips, atomic writes, clear errors."""

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import random_factors
from helpers import add_tensor
from waveinit import Learngene, WaveError, load_learngene, load_model, save_learngene, save_model
from waveinit.backends import numpy as ref
from waveinit.io.storage import FORMATS, LEARNGENE_FORMAT, read_header


@pytest.fixture
def learngene(small_spec):
    templates, scalers = random_factors(small_spec, 8, 3, dtype=np.float32)
    return Learngene(templates, scalers, small_spec, 8, {"data": "digits", "epochs": 2})


def test_learngene_round_trip_is_exact(tmp_path, learngene):
    path = tmp_path / "lg.safetensors"
    save_learngene(path, learngene)
    back = load_learngene(path)
    assert back.spec == learngene.spec and back.side == 8 and back.provenance == learngene.provenance
    for name in learngene.templates:
        assert back.templates[name].dtype == np.float32
        np.testing.assert_array_equal(back.templates[name], learngene.templates[name])
        np.testing.assert_array_equal(back.scalers[name], learngene.scalers[name])
    header = read_header(path)
    assert header["format"] == "waveinit.learngene" and header["format_version"] == FORMATS[LEARNGENE_FORMAT]
    assert header["roles"]["attn.qkv.weight"]["templates"] == [3, 8, 8]


def test_model_round_trip_is_exact_and_plain(tmp_path, learngene, small_spec):
    sd = ref.state_dict(small_spec, 8, learngene.templates, learngene.scalers)
    path = tmp_path / "model.safetensors"
    save_model(path, sd, small_spec, {"init": "test"})
    back = load_model(path)
    assert back.spec == small_spec and back.provenance == {"init": "test"}
    assert sorted(back.state_dict) == sorted(sd)
    for key in sd:
        np.testing.assert_array_equal(back.state_dict[key], sd[key])


def test_writes_are_atomic(tmp_path, learngene, monkeypatch):
    path = tmp_path / "lg.safetensors"
    save_learngene(path, learngene)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(WaveError, match="cannot write"):
        save_learngene(path, Learngene(learngene.templates, learngene.scalers, learngene.spec, 8, {"v": 2}))
    assert path.read_bytes() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["lg.safetensors"]  # and no temporary file is left


def test_wrong_kind_of_file(tmp_path, learngene, small_spec):
    path = tmp_path / "lg.safetensors"
    save_learngene(path, learngene)
    with pytest.raises(WaveError, match="expected a model file"):
        load_model(path)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": np.zeros(3)}, plain)
    with pytest.raises(WaveError, match="without a waveinit header"):
        load_learngene(plain)


def test_newer_format_version_is_refused(tmp_path, learngene):
    path = tmp_path / "lg.safetensors"
    save_learngene(path, learngene)
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, path, {**meta, "format_version": str(FORMATS[LEARNGENE_FORMAT] + 1)})
    with pytest.raises(WaveError, match="upgrade waveinit"):
        load_learngene(path)


@pytest.mark.parametrize("cut", [0, 7, 100, -10])
def test_truncated_or_corrupt_file(tmp_path, learngene, cut):
    path = tmp_path / "lg.safetensors"
    save_learngene(path, learngene)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut else b"not a safetensors file at all")
    with pytest.raises(WaveError, match="not a readable safetensors file"):
        load_learngene(path)


def test_missing_file(tmp_path):
    with pytest.raises(WaveError, match="no such file"):
        load_learngene(tmp_path / "learngene.safetensors")


def test_model_file_with_a_wrong_tensor_shape(tmp_path, learngene, small_spec):
    sd = ref.state_dict(small_spec, 8, learngene.templates, learngene.scalers)
    path = tmp_path / "m.safetensors"
    save_model(path, sd, small_spec)
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["head.bias"] = np.zeros(7, dtype=np.float32)
    save_file(tensors, path, meta)
    with pytest.raises(WaveError, match="head.bias has shape"):
        load_model(path)
    meta["waveinit"] = "{not json"
    save_file(tensors, path, meta)
    with pytest.raises(WaveError, match="damaged"):
        load_model(path)


def test_plain_timm_state_dict_is_read_with_an_inferred_spec(tmp_path, learngene, small_spec):
    sd = ref.state_dict(small_spec, 8, learngene.templates, learngene.scalers)
    plain = tmp_path / "timm.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, plain)
    model = load_model(plain, heads=small_spec.heads)
    assert model.spec == small_spec
    np.testing.assert_array_equal(model.state_dict["blocks.1.mlp.fc2.weight"], sd["blocks.1.mlp.fc2.weight"])
    save_file({**{k: np.ascontiguousarray(v) for k, v in sd.items()}, "fc_norm.weight": np.ones(16)}, plain)
    with pytest.raises(WaveError, match=r"missing tensor fc_norm\.bias"):  # fc_norm means average pooling, and needs both
        load_model(plain, heads=2)
    save_file({"weight": np.ones(3)}, plain)
    with pytest.raises(WaveError, match="not a plain ViT"):
        load_model(plain)


def test_a_learngene_with_a_tensor_it_should_not_hold_is_refused_by_name(tmp_path, learngene, small_spec):
    path = tmp_path / "lg.safetensors"
    save_learngene(path, learngene)
    add_tensor(path, "foo", np.zeros(3, np.float32))
    with pytest.raises(WaveError) as e:
        load_learngene(path)
    assert str(e.value) == (f"{path}: unexpected tensor 'foo' (not part of a 2x16 ViT's learngene): "
                            f"the file was written by another tool or damaged; distil it again")
    add_tensor(path, "templates.extra.weight", np.zeros((1, 8, 8), np.float32))
    with pytest.raises(WaveError, match=r"unexpected tensors 'foo', 'templates.extra.weight' \(not part of"):
        load_learngene(path)


def test_a_model_file_with_a_tensor_it_should_not_hold_is_refused_by_name(tmp_path, learngene, small_spec):
    sd = ref.state_dict(small_spec, 8, learngene.templates, learngene.scalers)
    path = tmp_path / "m.safetensors"
    save_model(path, sd, small_spec)
    add_tensor(path, "blocks.0.ls1.gamma", np.ones(16, np.float32))
    with pytest.raises(WaveError) as e:
        load_model(path)
    assert str(e.value) == (f"{path}: unexpected tensor 'blocks.0.ls1.gamma' (not part of a 2x16 ViT's model file): "
                            f"the file was written by another tool or damaged; write it again")
    # Without our header the spec is read off the tensors: fc_norm makes it average pooling,
    # which has no final `norm`, so the `norm` tensors are left over.
    plain = tmp_path / "timm.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, plain)
    add_tensor(plain, "fc_norm.weight", np.ones(16, np.float32))
    add_tensor(plain, "fc_norm.bias", np.zeros(16, np.float32))
    with pytest.raises(WaveError, match=r"unexpected tensors 'norm.bias', 'norm.weight' \(not part of a 2x16 ViT's state dict\)") as e:
        load_model(plain, heads=2)
    assert "\n" not in str(e.value)


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_any_process(tmp_path):
    # the safetensors library writes its metadata in a hash map's order, which differs between
    # processes: written through waveinit, a file's bytes depend on its contents alone
    import hashlib
    import json
    import subprocess
    import sys

    from safetensors import safe_open

    code = ("import sys, numpy as np\nfrom waveinit.io.storage import write_safetensors\n"
            "meta = {k: k * 3 for k in 'qwertyuiopasdfgh'}\n"
            "meta.update({'unicode': 'bl\\u00e5 \\u2014 \"quoted\"', 'format': 'waveinit.model'})\n"
            "write_safetensors(sys.argv[1], {'b': np.arange(5, dtype=np.float32), 'a': np.eye(3, dtype=np.float16)}, meta)\n")
    paths = [tmp_path / f"w{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}) == 1
    raw = paths[0].read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    with safe_open(str(paths[0]), "np") as f:  # still a valid file, with what was written
        meta = f.metadata()
        assert meta["unicode"] == 'bl\u00e5 \u2014 "quoted"' and meta["q"] == "qqq" and len(meta) == 18
        np.testing.assert_array_equal(f.get_tensor("a"), np.eye(3, dtype=np.float16))
        np.testing.assert_array_equal(f.get_tensor("b"), np.arange(5, dtype=np.float32))
