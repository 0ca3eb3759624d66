"""The spawn-rule study of issue #16 (protocol: docs/bench/protocol-v3.md, "The spawn-rule study").

    python benchmarks/spawn_rules.py --seed S --stage K [--out runs/rules]   # one seed's cells of stage K
    python benchmarks/spawn_rules.py --report [--out runs/rules]            # the tables, as markdown
    python benchmarks/spawn_rules.py --seed S --stage 7 --learngene ts      # stage 7's chosen arm on another learngene

Stages, each choosing on validation accuracy averaged over the seeds that ran it (stage K reads
the choices of stages < K from both seeds' rows, so run both seeds of a stage before the next):

0. the descendants' learning rate per size, under today's rule;
1. the depth rule (relative, first, even, interpolate, choose), width rule "pick";
2. the width rule (pick, mean, project), under stage 1's depth rule;
3. 4. 5. 6. the scaler fit's rate, then its length, then its loss, then which of its states it
   keeps (the last, or the epoch end with the lowest held-out loss), each under the choices before;
7. the final table: today's rule against the winners, each at its own best rate per size, with
   test accuracy (recorded here only; no choice reads it).

Run order: 0, 1, 2, 7, 3, 4, 5, 6, 7 (the first 7 scores the depth and width choices with
today's fit). Both seeds of a stage in parallel, one thread each:

    for stage in 0 1 2 7 3 4 5 6 7; do
      for s in 0 1; do OMP_NUM_THREADS=1 python benchmarks/spawn_rules.py --seed $s --stage $stage & done; wait
    done

Each cell (a size and an arm: the rules and the fit) records the data-free, after-fit and
after-one-epoch validation accuracy, the seconds and the image passes (forward-only ones apart).
Rows append to `<out>/seed<S>.jsonl`; a cell already there (same size, arm and rates) is reused,
so the study resumes and a stage reuses the cells of the stages before it.

The learngene is part of the arm: `base` (the protocol's learngene, every stage) unless
`--learngene VARIANT` names another distillation variant of `make_family.py`, committed beside it
(`fashion-mnist-6x192-<VARIANT>-s<S>.safetensors`); with one, only stage 7's chosen arm runs, so
the variant is judged by the same final table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_family import splits  # noqa: E402  (the protocol's train/validation split)

from waveinit.configs import DEPTH_RULES, EVAL_BATCH_SIZE, SpawnConfig, TrainConfig  # noqa: E402
from waveinit.io.datasets import load_dataset  # noqa: E402
from waveinit.io.files import load_learngene  # noqa: E402
from waveinit.spawning import layer_positions, target_spec  # noqa: E402
from waveinit.tasks import choose_depth_rule, fit_scalers, load_vit, spawned_factors  # noqa: E402
from waveinit.training.engine import train  # noqa: E402
from waveinit.training.evaluation import evaluate  # noqa: E402

SIZES = [(2, 64), (4, 64), (2, 128), (4, 128), (6, 128), (4, 192), (8, 192)]
FINAL_SIZES = SIZES + [(4, 256)]
RATES = (3e-4, 1e-3, 3e-3)
EPOCH_IMAGES = 5000  # the descendants' epoch: a fixed seeded draw of the train split
ANCESTRY = Path(__file__).parent / "assets" / "fashion-mnist-6x192.safetensors"
TODAY = {"depth_rule": "relative", "width_rule": "pick", "fit_lr": 0.1, "fit_steps": 400, "loss": "ce", "fit_keep": "last",
         "learngene": "base", "fit_patience": 0}
ARM = tuple(TODAY)
LOSSES = {"ce": None, "kd-t2-w0.5": (2.0, 0.5), "kd-t1-w1": (1.0, 1.0)}  # (temperature, KL weight), teacher: the ancestry


def learngene_path(seed: int, variant: str = "base") -> Path:
    """The learngene of distillation variant `variant` and seed `seed` (protocol v3), committed beside the ancestry."""
    return Path(__file__).parent / "assets" / "learngenes" / f"fashion-mnist-6x192-{variant}-s{seed}.safetensors"


class Study:
    def __init__(self, out: Path, seed: int, data_dir: str | None):
        self.out, self.seed = out, seed
        data = load_dataset("fashion-mnist", data_dir=data_dir)
        self.test_data, self.val_data = splits(data)
        self.genes = {}  # variant -> learngene, loaded when an arm first asks
        pick = np.random.default_rng(1000 + seed).permutation(len(self.val_data.train_labels))[:EPOCH_IMAGES]
        self.epoch_images, self.epoch_labels = self.val_data.train_images[pick], self.val_data.train_labels[pick]
        self.rows = read_rows(out, seed)
        self._teacher = None

    def gene(self, variant: str):
        if variant not in self.genes:
            path = learngene_path(self.seed, variant)
            if not path.exists():
                raise SystemExit(f"{path}: no such learngene: run make_family.py --only {variant} and copy it there")
            self.genes[variant] = load_learngene(path)
        return self.genes[variant]

    @property
    def teacher(self):
        if self._teacher is None:
            self._teacher = load_vit(ANCESTRY)[0].float().eval()
        return self._teacher

    def cell(self, stage: int, size: tuple[int, int], arm: dict, rates, test: bool = False) -> dict:
        """The row of `size` under `arm`, after an epoch at each of `rates`: reused if there, else run."""
        arm = {k: arm[k] for k in ARM}
        done = find(self.rows, size, arm, rates, test)
        if done is not None:
            return done
        start = time.perf_counter()
        gene = self.gene(arm["learngene"])
        spec = target_spec(gene, *size)
        temperature, kd_weight = LOSSES[arm["loss"]] or (2.0, 0.5)
        config = SpawnConfig(depth_rule=arm["depth_rule"], width_rule=arm["width_rule"], fit_steps=arm["fit_steps"], lr=arm["fit_lr"],
                             temperature=temperature, kd_weight=kd_weight, fit_keep=arm["fit_keep"], fit_patience=arm["fit_patience"],
                             seed=self.seed)
        row = {"stage": stage, "seed": self.seed, "size": list(size), **arm, "params": spec.num_params(), "forward_images": 0}
        depth_rule = arm["depth_rule"]
        if depth_rule == "choose":
            depth_rule, row["depth_losses"] = choose_depth_rule(gene, spec, self.val_data, config, device="cpu")
            candidates = {tuple(layer_positions(gene.spec.depth, size[0], rule)) for rule in DEPTH_RULES}
            row["forward_images"] += len(candidates) * config.choose_batches * config.batch_size
        row["depth_rule_used"] = depth_rule
        row["data_free"] = self.score(spawned_factors(gene, spec, self.seed, depth_rule=depth_rule, width_rule=arm["width_rule"])[0])
        teacher = self.teacher if LOSSES[arm["loss"]] else None
        fitted = fit_scalers(gene, spec, self.val_data, dataclasses.replace(config, depth_rule=depth_rule), teacher=teacher,
                             teacher_name="ancestry" if teacher else None, device="cpu")
        row["fit"] = {"accuracy": fitted.eval["accuracy"], "loss": fitted.eval["loss"], "kept": fitted.kept}
        row["fit_images"] = fitted.steps * config.batch_size
        row["fit_stopped"] = fitted.stopped
        row["forward_images"] += fitted.steps * config.batch_size if teacher else 0  # the teacher's forward passes
        row["epoch"] = {}
        for rate in rates:
            model = copy.deepcopy(fitted.model)
            train(model, self.epoch_images, self.epoch_labels, TrainConfig(epochs=1, batch_size=64, lr=rate, seed=self.seed), device="cpu")
            row["epoch"][f"{rate:g}"] = self.score(model, test)
        row["epoch_images"] = EPOCH_IMAGES * len(rates)
        row["seconds"] = time.perf_counter() - start
        with open(self.out / f"seed{self.seed}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.append(row)
        print(f"stage {stage} {size[0]}x{size[1]} {arm}: data-free {row['data_free']['accuracy']:.4f}, fit {row['fit']['accuracy']:.4f}, "
              f"epoch {max(v['accuracy'] for v in row['epoch'].values()):.4f} ({row['seconds']:.0f} s)", flush=True)
        return row

    def score(self, model, test: bool = False) -> dict:
        val = evaluate(model, self.val_data.test_images, self.val_data.test_labels, EVAL_BATCH_SIZE, "cpu")
        scores = {"accuracy": val["accuracy"], "loss": val["loss"]}
        if test:
            scores["test_accuracy"] = evaluate(model, self.test_data.test_images, self.test_data.test_labels, EVAL_BATCH_SIZE, "cpu")["accuracy"]
        return scores


# ---- rows and choices (every choice reads validation accuracy only, averaged over the seeds) ----


def read_rows(out: Path, seed: int | None = None) -> list[dict]:
    """The rows of one seed, or of every seed; rows written before the learngene was part of the arm are `base`'s."""
    files = [out / f"seed{seed}.jsonl"] if seed is not None else sorted(out.glob("seed*.jsonl"))
    rows = [json.loads(line) for f in files if f.exists() for line in f.read_text().splitlines() if line.strip()]
    for row in rows:
        row.setdefault("learngene", "base")
        row.setdefault("fit_patience", 0)  # rows from before the patience study: the fit ran all its steps
    return rows


def find(rows: list[dict], size: tuple, arm: dict, rates=(), test: bool = False, seed: int | None = None) -> dict | None:
    """A row of `size` under `arm` with an epoch at each of `rates` (with test scores if `test`)."""
    for r in rows:
        if (tuple(r["size"]) == tuple(size) and all(r[k] == arm[k] for k in ARM) and (seed is None or r["seed"] == seed)
                and all(f"{rate:g}" in r["epoch"] and (not test or "test_accuracy" in r["epoch"][f"{rate:g}"]) for rate in rates)):
            return r
    return None


def size_rates(rows: list[dict], arm: dict = TODAY) -> dict[tuple, float]:
    """Per size, the rate whose epoch has the best mean validation accuracy under `arm` (stage 0: today's rule)."""
    rates = {}
    for size in FINAL_SIZES:
        cells = [r for r in rows if tuple(r["size"]) == size and all(r[k] == arm[k] for k in ARM) and len(r["epoch"]) == len(RATES)]
        if cells:
            rates[size] = min(RATES, key=lambda rate: (-statistics.mean(c["epoch"][f"{rate:g}"]["accuracy"] for c in cells), rate))
    return rates


def best(rows: list[dict], arms: list[dict], sizes, rates: dict) -> dict:
    """Of `arms`, the one with the best mean after-epoch validation accuracy (at each size's rate)
    over the sizes and seeds where every arm ran; ties: after-fit accuracy, then the earlier arm."""
    seeds = sorted({r["seed"] for r in rows})
    cells = [(size, seed) for size in sizes for seed in seeds if all(find(rows, size, arm, [rates[size]], seed=seed) for arm in arms)]
    if not cells:
        raise SystemExit("no size has every arm of this stage yet: run the stage for every seed first")

    def score(index):
        found = [(find(rows, size, arms[index], [rates[size]], seed=seed), rates[size]) for size, seed in cells]
        return (statistics.mean(r["epoch"][f"{rate:g}"]["accuracy"] for r, rate in found),
                statistics.mean(r["fit"]["accuracy"] for r, _ in found), -index)

    return arms[max(range(len(arms)), key=score)]


STAGES = {  # stage: (field varied, its values, the sizes where it matters)
    1: ("depth_rule", (*DEPTH_RULES, "choose"), [s for s in SIZES if s[0] != 6]),
    2: ("width_rule", ("pick", "mean", "project"), [s for s in SIZES if s[1] < 192]),
    3: ("fit_lr", (0.03, 0.1, 0.3), SIZES),
    4: ("fit_steps", (100, 400, 1000), SIZES),
    5: ("loss", tuple(LOSSES), SIZES),
    6: ("fit_keep", ("last", "best"), SIZES),
}
FINAL = 7
PATIENCE = 8  # the fit's patience (issue #36): the chosen arm, stopping early, against stage 7's rows of it
PATIENCES = (1, 2, 4)


def arms_of(stage: int, arm: dict) -> list[dict]:
    field, values, _ = STAGES[stage]
    return [{**arm, field: value} for value in values]


def chosen(rows: list[dict], upto: int) -> dict:
    """The arm that the stages before `upto` chose, from today's; a stage with no rows keeps today's value."""
    arm, rates = dict(TODAY), size_rates(rows)
    for stage in range(1, min(upto, FINAL)):
        arms, sizes = arms_of(stage, arm), STAGES[stage][2]
        if any(r["stage"] == stage for r in rows):  # a stage that has run (its new arms carry its number)
            arm = best(rows, arms, sizes, rates)
    return arm


def run_stage(study: Study, stage: int, learngene: str = "base") -> None:
    rows = read_rows(study.out)
    if learngene != "base":
        if stage != FINAL:
            raise SystemExit(f"--learngene {learngene} runs stage {FINAL} only (the chosen arm's final table)")
        rates, arm = size_rates(rows), chosen(rows, FINAL)
        if set(rates) != set(FINAL_SIZES):
            raise SystemExit("run stage 0 first, for every seed")
        for size in FINAL_SIZES:
            study.cell(FINAL, size, {**arm, "learngene": learngene}, RATES, test=True)
        return
    if stage == PATIENCE:
        arm = chosen(rows, FINAL)
        for size in FINAL_SIZES:
            for patience in PATIENCES:
                study.cell(PATIENCE, size, {**arm, "fit_patience": patience}, RATES)
        return
    if stage == 0:
        for size in FINAL_SIZES:
            study.cell(0, size, TODAY, RATES, test=True)  # test recorded now (read by no choice), so the final stage reuses these
        return
    rates = size_rates(rows)
    if set(rates) != set(FINAL_SIZES):
        raise SystemExit("run stage 0 first, for every seed")
    arm = chosen(rows, stage)
    if stage < FINAL:
        for size in STAGES[stage][2]:
            for a in arms_of(stage, arm):
                study.cell(stage, size, a, [rates[size]])
        return
    for size in FINAL_SIZES:
        study.cell(FINAL, size, TODAY, RATES, test=True)
        study.cell(FINAL, size, arm, RATES, test=True)


# ---- the tables ------------------------------------------------------------------------------


def _cell(found: list[tuple[dict, str]]) -> str:
    """'data-free / after fit / after epoch' validation accuracy in %, mean over the seeds (± half the range with two or more)."""
    parts = []
    for get in (lambda r, k: r["data_free"]["accuracy"], lambda r, k: r["fit"]["accuracy"], lambda r, k: r["epoch"][k]["accuracy"]):
        values = [100 * get(r, k) for r, k in found]
        spread = f"±{(max(values) - min(values)) / 2:.1f}" if len(values) > 1 else ""
        parts.append(f"{statistics.mean(values):.1f}{spread}")
    return " / ".join(parts)


def stage_table(rows: list[dict], stage: int) -> str:
    """One stage's table: a row per size, a column per arm; the winner named under it."""
    rates = size_rates(rows)
    arm = chosen(rows, stage)
    field, values, sizes = STAGES[stage]
    arms = arms_of(stage, arm)
    lines = ["| size | rate | " + " | ".join(f"{field} = {v}" for v in values) + " |", "|---" * (len(values) + 2) + "|"]
    for size in sizes:
        if size not in rates:
            continue
        cells = []
        for a in arms:
            found = [(r, f"{rates[size]:g}") for r in rows if find([r], size, a, [rates[size]])]
            cells.append(_cell(found) if found else "not run")
        lines.append(f"| {size[0]}x{size[1]} | {rates[size]:g} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in rows})
    try:
        win = best(rows, arms, sizes, rates)[field]
        lines.append(f"\nWinner ({len(seeds)} seed(s)): **{field} = {win}** (best mean after-epoch validation accuracy over these sizes).")
    except SystemExit:
        lines.append("\nNo winner yet: not every arm has run.")
    return "\n".join(lines)


def final_table(rows: list[dict]) -> str:
    """The final stage: today's rule and each arm it was run with (the interim depth-and-width
    choice, then the whole chosen arm), each at its best rate per size (chosen on validation),
    test accuracy beside."""
    arms = [TODAY] + [a for a in _distinct_arms([r for r in rows if r["stage"] == FINAL]) if a != TODAY]
    names = ["today"] + [f"arm {i}" for i in range(1, len(arms))]
    lines = [f"- {name}: {arm}" for name, arm in zip(names, arms)] + [""]
    lines += ["| size | params | " + " | ".join(f"{name}: val / test (rate)" for name in names) + " |", "|---" * (len(arms) + 2) + "|"]
    for size in FINAL_SIZES:
        cols = []
        for a in arms:
            scored = final_score(rows, size, a)
            if scored is None:
                cols.append("not run")
                continue
            rate, val, test = scored
            spread = f"±{(max(test) - min(test)) / 2:.1f}" if len(test) > 1 else " (one seed)"
            cols.append(f"{val:.1f} / {statistics.mean(test):.1f}{spread} ({rate})")
        params = next((r["params"] for r in rows if tuple(r["size"]) == size), 0)
        lines.append(f"| {size[0]}x{size[1]} | {params:,} | " + " | ".join(cols) + " |")
    means = [final_mean(rows, a) for a in arms]
    lines.append("| mean (validation) | | " + " | ".join(f"{m[0]:.2f} over {m[1]} sizes" if m else "not run" for m in means) + " |")
    return "\n".join(lines)


def final_score(rows: list[dict], size: tuple, arm: dict) -> tuple[str, float, list[float]] | None:
    """`arm`'s final-stage cell at `size`: the rate with the best mean validation accuracy after
    the epoch, that accuracy (%, mean over seeds), and each seed's test accuracy there (%)."""
    found = [r for r in rows if find([r], size, arm, RATES, test=True)]
    if not found:
        return None
    rate = max(found[0]["epoch"], key=lambda k: statistics.mean(r["epoch"][k]["accuracy"] for r in found))
    return rate, statistics.mean(100 * r["epoch"][rate]["accuracy"] for r in found), [100 * r["epoch"][rate]["test_accuracy"] for r in found]


def final_mean(rows: list[dict], arm: dict) -> tuple[float, int] | None:
    """`arm`'s mean final validation accuracy (%) over the sizes where it ran, and their count."""
    vals = [scored[1] for size in FINAL_SIZES if (scored := final_score(rows, size, arm)) is not None]
    return (statistics.mean(vals), len(vals)) if vals else None


def patience_scores(rows: list[dict]) -> dict[int, dict] | None:
    """Per patience (0: no early stopping, stage 7's rows of the chosen arm), each seed's mean over
    the sizes of the validation accuracy after the epoch, at the rate per size with the best mean
    over the seeds (as stage 7 picks it), and the mean fit steps; None until every arm has every
    size for both seeds."""
    arm, seeds = chosen(rows, FINAL), (0, 1)
    scores = {}
    for patience in (0, *PATIENCES):
        cells = {(size, seed): find(rows, size, {**arm, "fit_patience": patience}, RATES, seed=seed) for size in FINAL_SIZES for seed in seeds}
        if not all(cells.values()):
            return None
        per_seed = {seed: [] for seed in seeds}
        for size in FINAL_SIZES:
            rate = max(cells[size, 0]["epoch"], key=lambda k: statistics.mean(cells[size, s]["epoch"][k]["accuracy"] for s in seeds))
            for seed in seeds:
                per_seed[seed].append(100 * cells[size, seed]["epoch"][rate]["accuracy"])
        scores[patience] = {"seeds": {seed: statistics.mean(v) for seed, v in per_seed.items()},
                            "steps": statistics.mean(c["fit_images"] / SpawnConfig().batch_size for c in cells.values())}
    return scores


def patience_choice(scores: dict[int, dict]) -> int:
    """The protocol's rule: the smallest patience whose mean is at least no stopping's minus the
    spread (half the range of no stopping's two seed means); 0 (never stop early) if none is."""
    reference = list(scores[0]["seeds"].values())
    floor = statistics.mean(reference) - (max(reference) - min(reference)) / 2
    return next((p for p in PATIENCES if statistics.mean(scores[p]["seeds"].values()) >= floor), 0)


def patience_table(rows: list[dict]) -> str:
    scores = patience_scores(rows)
    if scores is None:
        return "Not every arm has run for both seeds yet."
    lines = ["| patience | seed 0 | seed 1 | mean | fit steps (mean) |", "|---|---|---|---|---|"]
    for patience, score in scores.items():
        seeds = score["seeds"]
        lines.append(f"| {patience or 'none (all 400 steps)'} | {seeds[0]:.2f} | {seeds[1]:.2f} | {statistics.mean(seeds.values()):.2f} | "
                     f"{score['steps']:.0f} |")
    return "\n".join(lines + ["", f"Chosen: patience {patience_choice(scores)} (0: no early stopping)."])


def _distinct_arms(rows: list[dict]) -> list[dict]:
    arms = []
    for r in rows:
        arm = {k: r[k] for k in ARM}
        if arm not in arms:
            arms.append(arm)
    return arms


def report(rows: list[dict]) -> str:
    if not rows:
        return "no rows yet"
    rates = size_rates(rows)
    out = ["## Stage 0: the descendants' rate per size (today's rule; validation accuracy after one epoch, %)", "",
           "| size | " + " | ".join(f"{r:g}" for r in RATES) + " | chosen |", "|---" * (len(RATES) + 2) + "|"]
    for size in FINAL_SIZES:
        cells = [r for r in rows if find([r], size, TODAY, RATES)]
        if cells:
            accs = [statistics.mean(100 * c["epoch"][f"{rate:g}"]["accuracy"] for c in cells) for rate in RATES]
            out.append(f"| {size[0]}x{size[1]} | " + " | ".join(f"{a:.1f}" for a in accs) + f" | {rates[size]:g} |")
    for stage in STAGES:
        if any(r["stage"] == stage for r in rows):
            out += ["", f"## Stage {stage}: {STAGES[stage][0]} (validation accuracy, %: data-free / after fit / after one epoch)", "",
                    stage_table(rows, stage)]
    if any(r["stage"] == FINAL for r in rows):
        out += ["", f"## Stage {FINAL}: the final table (after one epoch at each method's best rate per size)", "", final_table(rows)]
    if any(r["stage"] == PATIENCE for r in rows):
        out += ["", f"## Stage {PATIENCE}: the fit's patience (validation accuracy after one epoch, %; fit steps taken)", "",
                patience_table(rows)]
    seconds = sum(r["seconds"] for r in rows)
    out += ["", f"Compute: {len(rows)} cells, {seconds / 3600:.2f} CPU-thread hours, "
            f"{sum(r['fit_images'] + r['epoch_images'] for r in rows):,} training image passes, "
            f"{sum(r['forward_images'] for r in rows):,} forward-only image passes."]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rules"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", type=int, choices=range(PATIENCE + 1), default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--report", action="store_true", help="print the tables (markdown) from the rows so far")
    parser.add_argument("--learngene", default="base", help="a distillation variant of make_family.py: stage 7's chosen arm on it")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report(read_rows(args.out)))
        return 0
    if args.stage is None:
        parser.error("give --stage or --report")
    torch.manual_seed(args.seed)
    run_stage(Study(args.out, args.seed, args.data_dir), args.stage, args.learngene)
    return 0


if __name__ == "__main__":
    sys.exit(main())
