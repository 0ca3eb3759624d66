"""README's main job, timed: `wave distill` on digits, then `wave spawn` of 2x64, 4x128 and 6x384
with the scaler fit's early stop (`--patience`, default: wave spawn's `--fit-patience`) and without it (`--fit-patience 0`,
every one of `--fit-steps`), each spawn run `--repeats` times, alternating the two.

    python benchmarks/main_job.py [--out runs/main-job] [--repeats 1]

Prints, per spawn, the median wall seconds of the whole command, the fit's steps and why it
stopped, and the test accuracy; then the main job's total (distill + the 6x384 spawn) both ways.
Run it on idle cores: the numbers are wall times of whole commands.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from waveinit.configs import SpawnConfig

SIZES = ("2x64", "4x128", "6x384")


def wave(*args: str, cwd: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "waveinit.cli", *args, "--json"], cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"wave {' '.join(args)} failed:\n{done.stderr}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/main-job"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--patience", type=int, default=SpawnConfig().fit_patience, help="the early stop's patience (default: wave spawn's)")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    distill_seconds, distilled = wave("distill", cwd=args.out)  # trains runs/ancestry.safetensors first, as README's command does
    print(f"wave distill: {distill_seconds:.1f} s (auxiliary {100 * distilled['test_accuracy']:.2f}%)", flush=True)
    results = {}
    for size in SIZES:
        depth, width = size.split("x")
        for _ in range(args.repeats):
            for arm, extra in (("early stop", ["--fit-patience", str(args.patience)]), ("all steps", ["--fit-patience", "0"])):
                seconds, record = wave("spawn", "--depth", depth, "--width", width, "--force", *extra, cwd=args.out)
                results.setdefault((size, arm), []).append((seconds, record))
        for arm in ("early stop", "all steps"):
            runs = results[size, arm]
            record = runs[0][1]
            print(f"wave spawn {size:>6} {arm:<10}: {statistics.median(s for s, _ in runs):6.1f} s, {record['fit_steps']:3d} fit steps "
                  f"({record['fit_stopped']}), test {100 * record['test_accuracy']:.2f}%", flush=True)
    for arm in ("early stop", "all steps"):
        spawn = statistics.median(s for s, _ in results["6x384", arm])
        print(f"main job ({arm}): {distill_seconds + spawn:.1f} s = distill {distill_seconds:.1f} + spawn 6x384 {spawn:.1f}")


if __name__ == "__main__":
    main()
