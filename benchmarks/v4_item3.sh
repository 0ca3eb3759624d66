#!/usr/bin/env bash
# Protocol v4, item 3 (docs/bench/protocol-v4.md): templates distilled through 2x64, 4x128 and
# 6x192 at once, at the FLOPs of the single-auxiliary `ts` learngene, then judged by its
# descendants (stage 7 of the spawn-rule study, validation). One CPU thread. Resumable.
#   benchmarks/v4_item3.sh SEED > runs/v4-item3-sSEED.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-0}
export OMP_NUM_THREADS=1
gene=benchmarks/assets/learngenes/fashion-mnist-6x192-sizes-s$seed.safetensors
if [ ! -e "$gene" ]; then
    python benchmarks/make_family.py --device cpu --ancestry benchmarks/assets/fashion-mnist-6x192.safetensors \
        --only sizes --seeds "$seed" --budget 1e9 --out "runs/family-sizes-s$seed"
    for f in "runs/family-sizes-s$seed"/sizes-s$seed.*; do cp "$f" "benchmarks/assets/learngenes/fashion-mnist-6x192-${f##*/}"; done
    cp "runs/family-sizes-s$seed/family.json" "benchmarks/assets/learngenes/fashion-mnist-6x192-sizes-s$seed.family.json"
fi
python benchmarks/spawn_rules.py --out docs/bench/ablations --seed "$seed" --stage 7 --learngene sizes
