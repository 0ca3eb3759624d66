#!/usr/bin/env bash
# Protocol v4, items 1 and 2 (docs/bench/protocol-v4.md): one recipe arm, its method groups in
# order, one CPU thread; `sizes`: the amendment's wave rows from the several-size learngene.
# Resumable: rerun the same command. Run both arms side by side:
#   benchmarks/v4.sh plain > runs/v4-plain.log 2>&1 &
#   benchmarks/v4.sh ancestry > runs/v4-ancestry.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
arm=${1:?usage: benchmarks/v4.sh plain|ancestry|sizes}
out=docs/bench/v4/$arm
if [ "$arm" = sizes ]; then  # the amendment: wave from the several-size learngene, the plain recipe
    export OMP_NUM_THREADS=1
    exec wave bench --preset v4-plain --threads 1 --ancestry benchmarks/assets/fashion-mnist-6x192.safetensors \
        --learngene benchmarks/assets/learngenes/fashion-mnist-6x192-sizes-s0.safetensors --out docs/bench/v4/plain-sizes \
        --depths 2,4,6 --widths 128 --extra-sizes 4x192 --methods wave
fi
mkdir -p "$out"
if [ "$arm" = ancestry ]; then  # v3's settings but lower_lrs: start from its records (protocol v4, item 1)
    for f in sweep.jsonl fit.jsonl cells.jsonl; do [ -e "$out/$f" ] || cp docs/bench/v3/$f "$out/$f"; done
fi
common=(--preset "v4-$arm" --threads 1 --ancestry benchmarks/assets/fashion-mnist-6x192.safetensors
        --learngene benchmarks/assets/learngenes/fashion-mnist-6x192-ts-s0.safetensors --out "$out")
export OMP_NUM_THREADS=1
wave bench "${common[@]}" --depths 2,4,6 --widths 128 --extra-sizes 4x192 --methods weight-selection,wave
wave bench "${common[@]}" --depths 2,4,6 --widths 128 --extra-sizes 4x192 --methods ws-auxiliary,wave-first
wave bench "${common[@]}" --depths 2,4 --widths 128 --extra-sizes 4x192 --methods wave-relative,wave-even
