"""The commands' own settings, beside the library's configs (`waveinit.configs`): data, output
and runtime, and what each command makes. Like the configs, each field is written once, with its
default, help and help panel (`option`); `cli/options.py` turns them into the commands' options
and their `--config` file's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from waveinit.configs import DATA, DISTILLATION, FIT, MODEL, RECIPE, option

DEFAULT_ANCESTRY = Path("runs/ancestry.safetensors")
DEFAULT_LEARNGENE = Path("runs/learngene.safetensors")
DATASETS = "digits, fashion-mnist, idx:DIR or folder:DIR"
DATA_DIR = "Folder holding the Fashion-MNIST IDX files."


@dataclass(frozen=True)
class DataOptions:
    data: Optional[str] = option("digits", f"Dataset: {DATASETS}.", DATA)
    data_dir: Optional[Path] = option(None, DATA_DIR, DATA)
    subset: Optional[int] = option(None, "Train on only this many images (a fixed seeded choice).", DATA)
    image_size: Optional[int] = option(None, "folder:DIR: resize images to this side (default: the model's, else their own).", DATA, min=1)
    augment: bool = option(False, "Augment training images: folder:DIR random-resized crops and flips (turns the teacher-logit cache off); "
                           "in-memory data (wave train only) random shifts and left-right flips.", DATA)
    aa: Optional[str] = option(None, "folder:DIR with --augment: timm's RandAugment or AutoAugment policy, e.g. rand-m9-mstd0.5-inc1 "
                               "(DeiT's); needs timm.", RECIPE)
    workers: int = option(0, "folder:DIR: processes decoding image batches ahead (0: none).", DATA, min=0)
    skip_bad_images: bool = option(False, "folder:DIR: leave out unreadable images (each is checked first) and say how many.", DATA)


@dataclass(frozen=True)
class RunOptions:
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    threads: Optional[int] = option(None, "PyTorch CPU threads (default: PyTorch's choice, at most the cores this process may use); "
                                    "recorded in the output's provenance. On a shared machine, 1 is often fastest.", min=1)
    force: bool = option(False, "Replace an existing output (default: refuse).")
    resume: bool = option(False, "Continue from the checkpoint next to --out.")
    log_dir: Optional[Path] = option(None, "Also write TensorBoard event files of every epoch here (train/loss, eval/top1, eval/top5, "
                                     "eval/loss, lr; needs pip install 'waveinit[tensorboard]').")
    as_json: bool = option(False, "Print one JSON object summarising the result on stdout (and nothing else there).", flag="--json")


HEADS = "Attention heads (default: width / 64)."


@dataclass(frozen=True)
class TrainModel:
    depth: Optional[int] = option(None, "Transformer blocks (default: 6).", MODEL)
    width: Optional[int] = option(None, "Embedding width (default: 192).", MODEL)
    heads: Optional[int] = option(None, HEADS, MODEL)
    patch: Optional[int] = option(None, "Patch side in pixels (default: image side / 4).", MODEL)
    init: Optional[Path] = option(None, "Start from this model file (e.g. made by `wave spawn`): then 5 epochs at lr 3e-4 unless "
                                  "--epochs and --lr say otherwise (a from-scratch rate undoes an inherited start).", MODEL)
    out: Optional[Path] = option(None, "Model file to write (default: runs/trained_d{D}_w{W}.safetensors, or "
                                 "runs/{init stem}-trained.safetensors).")


@dataclass(frozen=True)
class DistillModel:
    teacher: Optional[str] = option(None, "Ancestry: a model file, a timm-keyed safetensors ViT, a Hugging Face or timm folder, or a Hub "
                                    "model (ORG/NAME, hf-hub:ORG/NAME[@REVISION]) (default: runs/ancestry.safetensors, trained first "
                                    "if missing).", DISTILLATION)
    revision: Optional[str] = option(None, "A Hub teacher's branch, tag or commit (default: main).", DISTILLATION)
    teacher_heads: Optional[int] = option(None, "Heads of a plain safetensors teacher (default: width / 64).", DISTILLATION)
    depth: Optional[int] = option(None, "Auxiliary model's blocks (default: the teacher's).", MODEL)
    width: Optional[int] = option(None, "Auxiliary model's width (default: the teacher's).", MODEL)
    heads: Optional[int] = option(None, HEADS, MODEL)
    sizes: str = option("thirds", "The auxiliary sizes the templates are distilled through at once, each with its own scalers; a "
                        "descendant of a listed size starts from its scalers, others from the nearest. thirds: a third, two thirds "
                        "and all of the auxiliary's depth and width (2x64,4x128,6x192 for a 6x192; protocol v4, item 3: +4.1 points "
                        "after one epoch over 8 sizes); one: the auxiliary alone; or a list (DxW, DxWxH, timm names, parameter "
                        "budgets: 2x64,4x128,6x192) instead of --depth and --width.", MODEL)
    out: Path = option(DEFAULT_LEARNGENE, "Learngene file to write.")


@dataclass(frozen=True)
class SpawnModel:
    depth: Optional[int] = option(None, "Blocks of the new model.", MODEL)
    width: Optional[int] = option(None, "Width of the new model (a multiple of the template side).", MODEL)
    heads: Optional[int] = option(None, HEADS, MODEL)
    size: Optional[str] = option(None, "A size by timm's name: vit_tiny (12 blocks, 192 wide, 3 heads), vit_small (12/384/6), vit_base "
                                 "(12/768/12), vit_large (24/1024/16); --depth, --width and --heads override its parts.", MODEL)
    params: Optional[int] = option(None, "A parameter budget: the depth and width (a multiple of the template side) whose model is "
                                   "nearest it, for the learngene's data shape; the choice is printed.", MODEL, min=1)
    sizes: Optional[str] = option(None, "A family: several sizes in one run, comma-separated, mixing DxW, DxWxH, timm names and parameter "
                                  "budgets (2x64,vit_tiny,6x384,5M); one model file each in --out-dir, and the family table in "
                                  "family.csv and family.json.", MODEL)
    learngene: Path = option(DEFAULT_LEARNGENE, "Learngene file (made by `wave distill`), its Hub folder (wave export --format hub), a "
                             "Hub id (ORG/NAME, hf-hub:ORG/NAME[@REVISION], through the Hugging Face cache), or the name of one that "
                             "ships with waveinit: fashion-mnist.", MODEL)
    patch: Optional[int] = option(None, "Patch side, for data of another image size (default: the learngene's).", MODEL)
    teacher: Optional[str] = option(None, "Ancestry to distil from while fitting: a model file or folder, hf-hub:ORG/NAME, or 'recorded' "
                                    "(the ancestry the learngene records, which must be on this machine). Default: none, the fit "
                                    "trains on labels alone (the same model on every machine). With the ancestry the fit is better: "
                                    "docs/bench/ablations.md, stage 5.", FIT)
    no_fit: bool = option(False, "Data-free: scalers resampled from the learngene, no data used.", FIT)
    out: Optional[Path] = option(None, "Model file to write (default: runs/{learngene stem}_d{D}_w{W}.safetensors).")
    out_dir: Optional[Path] = option(None, "--sizes: the family's folder (default: runs/{learngene stem}-family).")
