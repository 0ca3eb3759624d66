"""Shared fixtures: random templates and scalers for a small ViT."""

import os

import numpy as np
import pytest
from typer.testing import CliRunner

from waveinit import ViTSpec, scaler_shapes, template_shapes
from waveinit.backends.numpy import kron_sum

# README's test command runs two pytest workers (pytest-xdist) on two cores: one thread each,
# or PyTorch's threads oversubscribe the cores. Set before any test imports torch.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Fixtures that train something real (an ancestry, a learngene, a whole quick bench): every test
# that uses one is slow, so `-m "not slow"` never trains them.
TRAINING_FIXTURES = {"ancestry", "learngene_file", "run"}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def reference_expand(scalers: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """The NumPy reference of kron_expand: the loop over np.kron, over every batch index of the scalers."""
    form = templates.ndim - 1
    batch = scalers.shape[: scalers.ndim - form - 1]
    flat = scalers.reshape(-1, *scalers.shape[len(batch) :])
    out = np.stack([kron_sum(s, templates) for s in flat])
    return out.reshape(*batch, *out.shape[1:])


def random_factors(spec: ViTSpec, side: int, n, seed: int = 0, dtype=np.float64):
    """Random (templates, scalers) of the right shapes for `spec`."""
    rng = np.random.default_rng(seed)
    templates = {k: rng.standard_normal(s).astype(dtype) for k, s in template_shapes(spec, side, n).items()}
    scalers = {k: rng.standard_normal(s).astype(dtype) / 4 for k, s in scaler_shapes(spec, side, n).items()}
    return templates, scalers


@pytest.fixture
def small_spec() -> ViTSpec:
    return ViTSpec(depth=2, width=16, heads=2, patch_size=2, image_size=4, channels=3, num_classes=5)


@pytest.fixture(scope="session")
def ancestry(tmp_path_factory):
    """A small ViT (2 x 64) really trained on digits by `wave train`, shared by the CLI tests."""
    from waveinit.cli.main import app

    path = tmp_path_factory.mktemp("ancestry") / "ancestry.safetensors"
    args = ["train", "--depth", "2", "--width", "64", "--epochs", "6", "--batch-size", "64", "--lr", "3e-3", "--out", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="session")
def learngene_file(ancestry, tmp_path_factory):
    """A learngene really distilled from `ancestry` on digits by `wave distill`, through the auxiliary alone."""
    from waveinit.cli.main import app

    path = tmp_path_factory.mktemp("learngene") / "learngene.safetensors"
    args = ["distill", "--teacher", str(ancestry), "--sizes", "one", "--epochs", "6", "--templates", "2", "--lr", "3e-3", "--batch-size", "64",
            "--out", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def one_thread():
    """PyTorch on one CPU thread for a module's tests. Models this small gain nothing from a
    second thread, and on a busy machine two threads per process thrash (tens of times slower).
    Numbers compared within such a module all come from this one setting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
