"""A learngene as a Hugging Face Hub artifact (`wave export LEARNGENE --format hub`): a folder
ready for `huggingface_hub.upload_folder`, and the way back (`--learngene` takes such a folder, a
Hub id or `hf-hub:ORG/NAME[@REV]`, resolved through the Hub cache like `--teacher`).

The folder holds:
    learngene.safetensors   the learngene file, byte for byte
    config.json             {"kind": "waveinit.learngene", format version, template side and order,
                            templates per role, the auxiliary's size (and every size it was
                            distilled through), the data}
    README.md               the model card: huggingface_hub's card metadata (library name,
                            license, tags, datasets), then the provenance, the auxiliary's
                            accuracy and the commands that spawn from it
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import WaveError
from .files import load_learngene
from .hf import json_bytes, write_folder
from .hub import FILE, KIND, folder_file, is_learngene_folder  # noqa: F401  (the folder's reader, beside its writer)
from .storage import FORMATS, LEARNGENE_FORMAT

TAGS = ["waveinit", "learngene", "wave", "weight-templates", "vision-transformer", "image-classification"]
# The Hub's ids of the datasets waveinit reads by name (others are named in the card's text only).
HUB_DATASETS = {"fashion-mnist": "zalando-datasets/fashion_mnist", "mnist": "ylecun/mnist"}


def hub_config(path: Path) -> dict:
    gene = load_learngene(path)
    aux = gene.spec
    return {"kind": KIND, "format_version": FORMATS[LEARNGENE_FORMAT], "file": FILE, "library_name": "waveinit",
            "template_side": gene.side, "kron_order": gene.order, "templates": gene.counts,
            "auxiliary": {"depth": aux.depth, "width": aux.width, "heads": aux.heads, "spec": aux.to_dict()},
            "sizes": list(gene.sizes), "data": gene.provenance.get("data"),
            "template_params": gene.num_template_params(), "scaler_params": gene.num_scaler_params()}


def model_card(path: Path, config: dict, *, license: str, repo_id: str | None) -> str:
    """README.md: the card metadata huggingface_hub reads, then what the learngene is and how to spawn from it."""
    from huggingface_hub import ModelCardData

    gene = load_learngene(path)
    p, data = gene.provenance, config["data"]
    datasets = [HUB_DATASETS[data]] if data in HUB_DATASETS else None
    meta = ModelCardData(library_name="waveinit", license=license, tags=TAGS, datasets=datasets).to_yaml()
    repo = repo_id or "ORG/NAME"
    aux = config["auxiliary"]
    pct = lambda x: f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "not recorded"  # noqa: E731
    scores = [f"- auxiliary model ({aux['depth']}x{aux['width']}, {aux['heads']} heads): test accuracy {pct(p.get('test_accuracy'))}"
              + (f", validation {pct(p['validation_accuracy'])}" if "validation_accuracy" in p else "")]
    if "teacher_test_accuracy" in p:
        scores.append(f"- ancestry (teacher) {p.get('teacher', '')}: test accuracy {pct(p['teacher_test_accuracy'])}")
    lines = [
        "---", meta.strip(), "---", "",
        f"# WAVE learngene: {data or 'unknown data'}, {max(config['templates'].values())} templates of {gene.side}x{gene.side} per role", "",
        "Weight templates (a *learngene*, [WAVE](https://arxiv.org/abs/2406.17503), CVPR 2025) that initialise Vision Transformers "
        "of any depth and width: each weight of a new model is a sum of Kronecker products of these shared templates with small "
        "size-specific scalers, fitted in seconds. Made and read by [waveinit](https://pypi.org/project/waveinit/).", "",
        "## Spawn a model from it", "", "```bash",
        f"wave spawn --learngene hf-hub:{repo} --depth 6 --width 384 --data {data or 'DATA'}",
        f"wave spawn --learngene hf-hub:{repo} --sizes 2x64,vit_tiny,6x384 --data {data or 'DATA'}   # a family",
        "```", "", "```python", "import waveinit", "",
        f"model = waveinit.spawn(\"hf-hub:{repo}\", depth=6, width=384)", "waveinit.save_model(\"vit-6x384.safetensors\", "
        "model.state_dict, model.spec, model.provenance)", "```", "",
        "## What it holds", "",
        f"- Kronecker order {gene.order} (`kron(T, S)`: scaler-shaped blocks)" if gene.order == "ts" else
        f"- Kronecker order {gene.order} (`kron(S, T)`: template-shaped blocks)",
        f"- {config['template_params']:,} template and {config['scaler_params']:,} scaler parameters, {path.stat().st_size:,} bytes",
        f"- distilled through {', '.join(config['sizes'])}" + (" (one scaler set each)" if len(config["sizes"]) > 1 else ""), "",
        "## Scores", "", *scores, "",
        "## Provenance", "", "```json", json.dumps(p, indent=1, sort_keys=True, default=str), "```", "",
    ]
    return "\n".join(lines)


def export_learngene(learngene: str | os.PathLike, out: str | os.PathLike, *, license: str = "other", repo_id: str | None = None) -> Path:
    """Write the Hub folder of a learngene file (or shipped name) at `out` (replaced whole, atomically)."""
    from .files import learngene_path

    path = learngene_path(learngene)
    config = hub_config(path)
    try:
        card = model_card(path, config, license=license, repo_id=repo_id)
    except ImportError:
        raise WaveError("the model card needs huggingface_hub: pip install huggingface_hub") from None
    write_folder(out, {FILE: path.read_bytes(), "config.json": json_bytes(config), "README.md": card.encode()})
    return Path(out)
