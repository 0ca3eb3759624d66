"""The steps behind the commands, with PyTorch: train a plain ViT (an ancestry, or any model;
`train.py`), distil an ancestry into a learngene (WAVE's, or TLEG's for comparison;
`distillation.py`), and fit a spawned model's scalers (`fitting.py`), on what they share
(`models.py`: models for data, checkpoints and metrics beside an output, the teacher's loss).

Each step takes a Dataset, a model or learngene, and its config from `configs.py`; it trains
with the engine (`training/`) and writes its file through `io/`. The CLI, the bench, the
examples and `waveinit.spawn` all call these functions.
"""

from .distillation import DistillResult, distill, distill_tleg, per_member
from .fitting import FIT_HOLDOUT, SpawnResult, choose_depth_rule, fit_images, fit_scalers, resolve_teacher, spawned_factors
from .models import check_fits, checkpoint_path, default_patch, ema_path, load_vit, random_vit, save_vit, spec_for, teacher_kd_loss
from .train import train_ancestry, train_vit

__all__ = ["FIT_HOLDOUT", "DistillResult", "SpawnResult", "check_fits", "checkpoint_path", "choose_depth_rule", "default_patch", "distill",
           "distill_tleg", "ema_path", "fit_images", "fit_scalers", "load_vit", "per_member", "random_vit", "resolve_teacher", "save_vit",
           "spawned_factors", "spec_for", "teacher_kd_loss", "train_ancestry", "train_vit"]
