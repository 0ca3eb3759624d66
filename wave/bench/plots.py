"""The plots of `wave bench` (matplotlib, imported when a plot is drawn): accuracy against
model size, against training epochs and against compute per size, each method's FLOP saving
against its parameters, the learngene's capacity (auxiliary accuracy against bytes), and storage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..io.storage import atomic_write_bytes
from .config import BenchConfig

STYLE = {  # method -> (colour, marker, line style)
    "random": ("tab:gray", "o", "-"),
    "weight-selection": ("tab:orange", "s", "-"),
    "mimetic": ("tab:olive", "P", "-"),
    "nearest-kron": ("tab:purple", "v", "-"),
    "tleg": ("tab:brown", "*", "-"),
    "kd-per-size": ("tab:green", "h", "-"),
    "wave": ("tab:blue", "D", "-"),
    "wave-nofit": ("tab:cyan", "^", "--"),
    "scratch": ("black", "x", ":"),
    "ws-auxiliary": ("tab:red", "s", "--"),
    "wave-first": ("tab:pink", "D", "--"),
    "wave-relative": ("navy", "d", "-."),
    "wave-even": ("teal", "d", ":"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_accuracy_vs_size(path: Path, summary: dict, sizes: list[str], methods: list[str], config: BenchConfig) -> None:
    """Test accuracy against model size, one line per method: after initialisation, and after
    training. Sizes are evenly spaced in order of parameters (a log axis crowds sizes of similar
    parameter counts until their labels collide)."""
    plt = _pyplot()
    e, k = config.epochs, config.scratch_epochs
    order = sorted({(s["params"], size) for (size, _), s in summary.items()})
    position = {size: i for i, (_, size) in enumerate(order)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, title, epoch_of in ((axes[0], "after initialisation (epoch 0)", lambda m: 0),
                                (axes[1], f"after {e} epoch(s) (scratch: {k})", lambda m: k if m == "scratch" else e)):
        for m in methods:
            if m == "scratch" and epoch_of(m) == 0:
                continue  # its initialisation is random's
            points = sorted((position[size], s["mean"][s["epochs"].index(epoch_of(m))], s["std"][s["epochs"].index(epoch_of(m))])
                            for (size, mm), s in summary.items() if mm == m and s["status"] == "ok")
            if not points:
                continue
            x, y, err = (np.array(v) for v in zip(*points))
            colour, marker, line = STYLE[m]
            ax.errorbar(x, 100 * y, yerr=100 * err, label=m, color=colour, marker=marker, linestyle=line, capsize=3)
        ax.set_xticks(range(len(order)), [f"{size}\n{short_count(p)}" for p, size in order], fontsize=8)
        ax.set_xlabel("model size: depth x width, parameters (in order of parameters)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("Test accuracy against model size (mean ± std over seeds)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, path)
    plt.close(fig)


def plot_accuracy_vs_epoch(path: Path, summary: dict, sizes: list[str], methods: list[str]) -> None:
    """One panel per size: test accuracy against training epochs, one line per method."""
    fig, axes = _panels(len(sizes), sharey=True)
    for ax, size in zip(axes.flat, sizes):
        for m in methods:
            s = summary.get((size, m))
            if s is None or s["status"] != "ok":
                continue
            x, y, err = np.array(s["epochs"]), 100 * np.array(s["mean"]), 100 * np.array(s["std"])
            colour, marker, line = STYLE[m]
            ax.plot(x, y, label=m, color=colour, marker=marker, linestyle=line, markersize=4)
            ax.fill_between(x, y - err, y + err, color=colour, alpha=0.15)
        params = next(s["params"] for (sz, _), s in summary.items() if sz == size)
        ax.set_title(f"{size} ({short_count(params)} parameters)")
        ax.set_xlabel("epoch")
    _finish_panels(fig, axes, len(sizes), "Test accuracy against training epochs, per model size (mean ± std over seeds)", path)


def plot_accuracy_vs_compute(path: Path, summary: dict, sizes: list[str], methods: list[str]) -> None:
    """One panel per size: scratch's test accuracy against its training compute (a curve, mean
    ± std), and each method's accuracy after its initialisation and after each budget at its
    compute (± std). Compute in FLOPs (`waveinit.flops`: the ancestry's forward passes included)
    where every record has them, else in image passes (epochs of the training set)."""
    fig, axes = _panels(len(sizes), sharey=False)
    for ax, size in zip(axes.flat, sizes):
        drawn = [(m, s) for m in methods if (s := summary.get((size, m))) is not None and s["status"] == "ok"]
        in_flops = all(None not in s["flops"] for _, s in drawn)
        for m, s in drawn:
            x = np.array(s["flops"], dtype=float) / 1e12 if in_flops else np.array(s["compute"]) / s["train_images"]
            y, err = 100 * np.array(s["mean"]), 100 * np.array(s["std"])
            colour, marker, line = STYLE[m]
            if m == "scratch":
                ax.plot(x, y, label=m, color=colour, marker=marker, linestyle=line, markersize=4)
                ax.fill_between(x, y - err, y + err, color=colour, alpha=0.12)
            else:  # after initialisation and after each budget (a curve where there are several)
                ax.errorbar(x, y, yerr=err, label=m, color=colour, marker=marker, linestyle=line, markersize=6, capsize=3, alpha=0.85)
        params = next(s["params"] for (sz, _), s in summary.items() if sz == size)
        ax.set_title(f"{size} ({short_count(params)} parameters)")
        ax.set_xlabel("compute (TFLOPs: fwd+bwd, the ancestry's forward included)" if in_flops
                      else "training compute (epochs of the training set, fwd+bwd passes)")
    _finish_panels(fig, axes, len(sizes), "Accuracy against compute per size: scratch's curve, every method after its budget "
                                           "(mean ± std over seeds)", path)


def plot_savings_vs_params(path: Path, compute: dict, summary: dict, sizes: list[str], methods: list[str], epochs: int) -> None:
    """Each method's FLOP saving against scratch (scratch's FLOPs to reach the method's accuracy
    after `epochs`, over the method's own) against the model's parameters: the paper's
    "particularly for smaller models", measured. Two panels: scratch's curve read in straight
    lines between its budgets, and in log-compute (where the curve bends, the straight lines
    overstate what scratch needs). Hollow: scratch never got there (a lower bound)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    params = {sz: s["params"] for (sz, _), s in summary.items()}
    drawn = False
    for ax, (scale, tail) in zip(axes, (("straight lines", ""), ("log-compute", "_log"))):
        for m in methods:
            points = []
            for size in sizes:
                c = compute["sizes"][size].get(m)
                if c is None or not c.get("flops") or c.get("scratch_max_flops") is None:
                    continue
                reach = c[f"scratch_equivalent_flops{tail}"]
                points.append((params[size], (reach if reach is not None else c["scratch_max_flops"]) / c["flops"], reach is not None))
            if not points:
                continue
            drawn = True
            colour, marker, line = STYLE[m]
            points.sort()
            ax.plot([p for p, _, _ in points], [r for _, r, _ in points], color=colour, linestyle=line, alpha=0.6)
            for x, ratio, reached in points:
                ax.scatter([x], [ratio], color=colour if reached else "white", edgecolors=colour, marker=marker, s=45, zorder=3)
            ax.plot([], [], color=colour, marker=marker, linestyle=line, label=m)
        ax.axhline(1.0, color="black", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model parameters (log scale)")
        ax.set_title(f"scratch's curve read in {scale}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("FLOP saving against scratch (log scale)")
    from matplotlib.ticker import FuncFormatter  # after _pyplot(), which chose the backend

    times = FuncFormatter(lambda v, _: f"{v:g}x")
    axes[0].yaxis.set_major_formatter(times)
    axes[0].yaxis.set_minor_formatter(times)
    if drawn:
        handles, labels = _legend(axes[None, :])
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    else:  # no method has a FLOP saving to show (no scratch, or records older than the FLOP count)
        axes[0].text(0.5, 0.5, "no FLOP savings to show", transform=axes[0].transAxes, ha="center")
    fig.suptitle(f"Scratch's FLOPs to each method's accuracy after {epochs} epoch(s), over the method's own "
                 "(hollow: scratch never got there, a lower bound; below 1: scratch is cheaper)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    _save(fig, path)
    plt.close(fig)


def _panels(count: int, sharey: bool):
    """A figure of `count` panels, three to a row: (figure, 2-D array of axes)."""
    cols = min(3, count)
    rows = -(-count // cols)
    return _pyplot().subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False, sharey=sharey)


def _finish_panels(fig, axes, count: int, title: str, path: Path) -> None:
    """Grids, y labels, the unused panels off, one legend for all panels, the title; saved and closed."""
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    handles, labels = _legend(axes)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 9), bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))  # the top strip keeps the title off the first row's
    _save(fig, path)
    _pyplot().close(fig)


def _legend(axes) -> tuple[list, list[str]]:
    """Every method drawn in any panel, once (a method n/a in the first panel still shows)."""
    seen = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def plot_capacity(path: Path, capacity: list[dict], ancestry_accuracy: float, tolerance: float, where: str = "test") -> None:
    """The capacity study: each candidate learngene's auxiliary accuracy (on `where`'s images, the ones the rule read) against its bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in capacity:
        colour = "tab:blue" if c["chosen"] else "tab:gray"
        accuracy = c["score"]
        ax.scatter([c["bytes"] / 1e3], [100 * accuracy], color=colour, marker="D" if c["chosen"] else "o", s=50)
        ax.annotate(f"{c['templates']}x{c['side']}², {c['epochs']} ep", (c["bytes"] / 1e3, 100 * accuracy), fontsize=8,
                    textcoords="offset points", xytext=(5, 4))
    ax.axhline(100 * ancestry_accuracy, color="black", linestyle=":", label="ancestry")
    ax.axhline(100 * (ancestry_accuracy - tolerance), color="black", linestyle="--", alpha=0.4, label=f"ancestry - {100 * tolerance:g} point(s)")
    ax.set_xscale("log")
    ax.set_xlabel("learngene file (kB, log scale)")
    ax.set_ylabel(f"auxiliary model's {where} accuracy (%)")
    ax.set_title("What condensation keeps: templates per role x side², distillation epochs (blue: chosen)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_storage(path: Path, storage: dict) -> None:
    """Bytes stored against the number of sizes initialised (smallest first): dense models
    against the learngene plus each size's scalers."""
    plt = _pyplot()
    sizes = sorted(storage["sizes"].items(), key=lambda kv: kv[1]["params"])
    count = np.arange(1, len(sizes) + 1)
    dense = np.cumsum([s["dense_bytes"] for _, s in sizes]) / 1e6
    gene = (storage["learngene_bytes"] + np.cumsum([s["scaler_bytes"] for _, s in sizes])) / 1e6
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(count, dense, marker="o", color="tab:gray", label="a dense model per size")
    ax.plot(count, gene, marker="D", color="tab:blue", label="learngene + each size's scalers")
    ax.axhline(storage["learngene_bytes"] / 1e6, color="tab:blue", linestyle=":", label="learngene file alone")
    ax.set_xticks(count, [name for name, _ in sizes], rotation=30)
    ax.set_xlabel("model sizes initialised (cumulative, smallest first)")
    ax.set_yscale("log")  # the learngene is two orders of magnitude below the dense models
    ax.set_ylabel("storage (MB, float32, log scale)")
    ax.set_title("Learngene size against the total size of the models it initialises")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def short_count(n: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"
