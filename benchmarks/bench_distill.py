"""Cost of the templated (auxiliary) model against the plain ViT, and dense W vs kron_matmul.

    python benchmarks/bench_distill.py [--steps 20] [--threads N]

1. One optimisation step (forward, backward, AdamW) of the auxiliary TemplatedViT against the
   plain ViT of the same size on the same batch, teacher excluded; the ratio is the overhead of
   rebuilding every weight from templates and scalers each step.
2. For single block weights: building W = kron_expand(S, T) and one dense matmul, against
   kron_matmul (never building W), forward and backward, at several widths and template counts.
3. Distillation images/s (`waveinit.tasks.distill`, real digits data, a 6 x 192
   teacher and auxiliary model) with the teacher-logit cache and without it.
Medians over --steps runs after a warm-up, all in one process.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from waveinit import ViTSpec, kron_expand, kron_matmul
from waveinit.backends.torch import TemplatedViT, ViT


def median_ms(fn, steps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * times[len(times) // 2]


def step_fn(model, images, labels):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def bench_steps(steps: int) -> None:
    print("one training step, plain ViT vs templated ViT (4 templates of 64x64 per role)")
    print(f"{'data shape':>12} {'depth x width':>13} {'tokens':>6} {'batch':>5} {'plain ms':>9} {'templated ms':>12} {'ratio':>6}")
    cases = [  # (image, patch, channels, depth, width, batch)
        (8, 2, 1, 6, 192, 128),  # digits, the default ancestry size
        (28, 7, 1, 6, 192, 128),  # Fashion-MNIST, patch 7
        (28, 4, 1, 6, 192, 64),  # Fashion-MNIST, patch 4
        (28, 7, 1, 12, 384, 64),  # a ViT-S-wide model
    ]
    for image, patch, channels, depth, width, batch in cases:
        spec = ViTSpec(depth=depth, width=width, patch_size=patch, image_size=image, channels=channels, num_classes=10)
        images = torch.randn(batch, channels, image, image)
        labels = torch.randint(0, 10, (batch,))
        torch.manual_seed(0)
        plain = median_ms(step_fn(ViT(spec), images, labels), steps)
        templated = median_ms(step_fn(TemplatedViT(spec, 64, 4), images, labels), steps)
        print(f"{channels}x{image}x{image:<7} {depth:>5} x {width:<5} {spec.tokens:>6} {batch:>5} {plain:>9.2f} {templated:>12.2f} {templated / plain:>5.2f}x")


def bench_weights(steps: int) -> None:
    print("\none block weight, forward + backward: dense (kron_expand, then x @ W.T) vs kron_matmul")
    print(f"{'role':>5} {'width':>5} {'N':>3} {'rows of x':>9} {'dense ms':>9} {'kron_matmul ms':>14} {'faster':>12}")
    for width in (192, 384, 768):
        for role, (out_mult, in_mult) in (("qkv", (3, 1)), ("fc1", (4, 1))):
            for n in (4, 12):
                rows = 4096
                s = torch.randn(n, out_mult * width // 64, in_mult * width // 64, requires_grad=True)
                t = torch.randn(n, 64, 64, requires_grad=True)
                x = torch.randn(rows, in_mult * width, requires_grad=True)

                def dense():
                    (x @ kron_expand(s, t).T).sum().backward()

                def factored():
                    kron_matmul(x, s, t).sum().backward()

                d, k = median_ms(dense, steps), median_ms(factored, steps)
                print(f"{role:>5} {width:>5} {n:>3} {rows:>9} {d:>9.2f} {k:>14.2f} {'dense' if d <= k else 'kron_matmul':>12}")


def bench_cache(steps: int) -> None:
    import tempfile

    from waveinit.configs import DistillConfig, TrainConfig
    from waveinit.io.datasets import load_dataset
    from waveinit.tasks import distill, spec_for

    print("\ndistillation throughput, digits, teacher and auxiliary model 6 x 192, batch 64")
    data = load_dataset("digits")
    spec = spec_for(data, 6, 192)
    torch.manual_seed(0)
    teacher = ViT(spec)
    config = TrainConfig(epochs=1, batch_size=64, max_steps=steps * 3)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cache in (True, False):
            start = time.perf_counter()
            result = distill(teacher, data, spec, config, DistillConfig(cache_teacher=cache), out=f"{tmp}/lg.safetensors", device="cpu")
            seconds = time.perf_counter() - start  # the cache's one teacher pass is counted in
            rates[cache] = result.train.steps * config.batch_size / seconds
            print(f"  teacher cache {'on ' if cache else 'off'}: {rates[cache]:8.0f} img/s over {result.train.steps} steps ({seconds:.1f} s)")
    print(f"  the cache is {rates[True] / rates[False]:.2f}x faster at this run length (more with more epochs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", choices=["steps", "weights", "cache"], default=None, help="run one part")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, part in (("steps", bench_steps), ("weights", bench_weights), ("cache", bench_cache)):
        if args.only in (None, name):
            part(args.steps)


if __name__ == "__main__":
    main()
