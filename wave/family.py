"""`waveinit.spawn_family`: a family of model sizes from one learngene, in one call (`wave spawn
--sizes`): the learngene, the data and the teacher are loaded once, each size is spawned and
saved as its own model file, and the family table is kept beside them (`family.csv`,
`family.json`), rewritten after every size so that an interrupted family keeps what it finished.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .api import plan_spawn, run_spawn
from .configs import SpawnConfig
from .errors import WaveError
from .io.files import load_learngene, save_model
from .io.storage import atomic_write_bytes
from .learngene import Learngene
from .sizes import Size, parse_sizes
from .training.interrupts import Interrupted

COLUMNS = ("size", "depth", "width", "heads", "params", "auxiliary", "data_free_accuracy", "fitted_accuracy", "kept", "fit_steps", "fit_stopped",
           "test_accuracy", "seconds", "file")


@dataclass
class Family:
    out_dir: Path
    rows: list[dict]  # one per size, in the order asked: COLUMNS
    ran: int  # sizes spawned by this call (the rest were finished before: resume)


def model_name(learngene: str, depth: int, width: int) -> str:
    """A member's file name, as `wave spawn` names a single model: {learngene stem}_d{D}_w{W}.safetensors."""
    return f"{Path(learngene).name.removesuffix('.safetensors')}_d{depth}_w{width}.safetensors"


def spawn_family(learngene: Learngene | str | os.PathLike, sizes: str | Sequence[Size], out_dir: str | os.PathLike, *,
                 config: SpawnConfig = SpawnConfig(), data=None, teacher=None, fit: bool = True, device: str = "auto",
                 force: bool = False, resume: bool = False, on_size: Callable[[dict], None] | None = None,
                 on_progress: Callable | None = None, workers: int = 0, name: str | None = None, **spawn_options) -> Family:
    """Spawn every size of `sizes` (a list of `waveinit.sizes.Size`, or text: "2x64,vit_tiny,5M")
    from `learngene` into `out_dir`, one model file each. `config`, `data`, `teacher` and `fit`
    are `waveinit.spawn`'s and apply to every size (`spawn_options`: the rest of `plan_spawn`'s,
    data_dir, patch, image_size). An existing member or table is refused unless `force`; with
    `resume`, the sizes the table records as finished under the same settings are kept. A size
    the learngene was distilled through starts from its own scalers. `on_size` receives each row,
    `on_progress` the fits' progress (as `waveinit.spawn`'s). `name`: how the files and the table
    name the learngene (default: its path; one in memory is "learngene")."""
    out_dir = Path(out_dir)
    source = name or ("learngene" if isinstance(learngene, Learngene) else str(learngene))
    gene = learngene if isinstance(learngene, Learngene) else load_learngene(learngene)
    wanted = parse_sizes(sizes, gene.spec, gene.side) if isinstance(sizes, str) else list(sizes)
    settings = {"learngene": source, "config": asdict(config), "fit": fit, "data": getattr(data, "name", data),
                "teacher": None if teacher is None else str(teacher) if isinstance(teacher, (str, os.PathLike)) else "(in memory)",
                **spawn_options}
    done = _finished(out_dir, settings, resume)
    files = {s.name: out_dir / model_name(source, s.depth, s.width) for s in wanted}
    if not force:
        for s in wanted:
            if s.name not in done and files[s.name].exists():
                raise WaveError(f"{files[s.name]} exists: pass force=True (--force) to replace it, or resume=True (--resume) to continue the family")
    rows, ran, teacher_name = [], 0, None
    try:
        for s in wanted:
            if s.name in done:
                rows.append(done[s.name])
                continue
            start = time.perf_counter()
            plan = plan_spawn(gene, s.depth, s.width, s.heads, data=data, fit=fit, config=config, teacher=teacher, teacher_name=teacher_name,
                              device=device, **spawn_options)
            if plan.data is not None:  # loaded once, for every size
                data = plan.data
            if plan.teacher is not None:
                teacher, teacher_name = plan.teacher, plan.teacher_name
            model = run_spawn(plan, on_progress=on_progress, workers=workers)
            save_model(files[s.name], model.state_dict, model.spec, {**model.provenance, "family": str(out_dir)})
            rows.append(_row(s, model, files[s.name], time.perf_counter() - start))
            ran += 1
            _write_table(out_dir, settings, rows)
            if on_size is not None:
                on_size(rows[-1])
    except Interrupted as e:
        _write_table(out_dir, settings, rows)
        raise Interrupted(e.signum, f"{len(rows)} of {len(wanted)} sizes in {out_dir}") from None
    _write_table(out_dir, settings, rows)
    return Family(out_dir, rows, ran)


def _row(size: Size, model, path: Path, seconds: float) -> dict:
    p, spec = model.provenance, model.spec
    held = p.get("fit_holdout") or {}
    return {"size": size.asked, "depth": spec.depth, "width": spec.width, "heads": spec.heads, "params": spec.num_params(),
            "auxiliary": p.get("auxiliary", ""), "data_free_accuracy": held.get("start_accuracy"), "fitted_accuracy": held.get("fitted_accuracy"),
            "kept": p.get("fit_kept", "data-free"), "fit_steps": p.get("fit_steps"), "fit_stopped": p.get("fit_stopped"),
            "test_accuracy": p.get("test_accuracy"), "seconds": round(seconds, 3), "file": path.name,
            "key": size.name}


def _finished(out_dir: Path, settings: dict, resume: bool) -> dict[str, dict]:
    """The rows of a family table to keep (resume): its sizes whose files are there, under the same settings."""
    path = out_dir / "family.json"
    if not resume or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("settings") != json.loads(json.dumps(settings, default=str)):
        raise WaveError(f"{path} records a family made with other settings: resume with the same options, or pass --force to start again")
    return {row["key"]: row for row in saved["sizes"] if (out_dir / row["file"]).exists()}


def _write_table(out_dir: Path, settings: dict, rows: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "family.json", (json.dumps({"settings": settings, "sizes": rows}, indent=1, default=str) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out_dir / "family.csv", text.getvalue().encode())
