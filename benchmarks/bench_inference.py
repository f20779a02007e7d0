"""CPU inference speed of each zoo entry beside its baseline, with the FLOPs ratio (batch 1, eval, one view).

Goal: the measured speed-up over the baseline reaches >= 80 % of the FLOPs ratio (e.g.
`mvit_b_16x4_t0.4_s0.6` >= 3.0x `mvit_b_16x4`). Every model of a family is timed in the same run,
interleaved round by round so that drifts of the machine hit all of them alike.

    python benchmarks/bench_inference.py [--family mvit|swin|all] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import machine, write_result  # noqa: E402

import stts  # noqa: E402
from stts.flops import gflops  # noqa: E402
from stts.registry import family_of, family_spec, list_families  # noqa: E402
from stts.zoo import ZOO  # noqa: E402

# per family: its all-token baseline (the recipe's plain model) first, then the zoo's STTS entries
FAMILIES = {
    f: [family_spec(f).recipe.plain_model]
    + [n for n in ZOO if family_of(n) == f and n != family_spec(f).recipe.plain_model]
    for f in list_families()
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: benchmarks/results)")
    args = ap.parse_args(argv)
    families = list(FAMILIES) if args.family == "all" else [args.family]
    torch.manual_seed(0)
    results = {"threads": torch.get_num_threads(), "rounds": args.rounds, "models": {}}
    lines = [
        f"CPU, batch 1, eval, `torch.inference_mode`, {torch.get_num_threads()} threads, median of "
        f"{args.rounds} rounds after a warm-up.",
        "",
        "| model | GFLOPs (fvcore) | s / clip | clips/s | speed-up | FLOPs ratio | speed-up / FLOPs ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for family in families:
        names = FAMILIES[family]
        models = {n: stts.build_model(n).eval() for n in names}
        inputs = {n: torch.randn(stts.input_shape(m)) for n, m in models.items()}
        flops = {n: gflops(m, stts.input_shape(m)) for n, m in models.items()}
        times: dict[str, list[float]] = {n: [] for n in names}
        with torch.inference_mode():
            for n in names:  # warm-up
                models[n](inputs[n])
            for _ in range(args.rounds):
                for n in names:
                    t0 = time.perf_counter()
                    models[n](inputs[n])
                    times[n].append(time.perf_counter() - t0)
        base = names[0]
        base_s = statistics.median(times[base])
        for n in names:
            s = statistics.median(times[n])
            speedup, ratio = base_s / s, flops[base] / flops[n]
            results["models"][n] = {
                "gflops": flops[n], "seconds": s, "times": times[n], "speedup": speedup, "flops_ratio": ratio,
                "efficiency": speedup / ratio,
            }  # fmt: skip
            lines.append(
                f"| {n} | {flops[n]:.2f} | {s:.3f} | {1 / s:.2f} | {speedup:.2f}x | {ratio:.2f}x | {speedup / ratio:.0%} |"
            )
        del models
    worst = min(
        results["models"].items(), key=lambda kv: kv[1]["efficiency"] if kv[1]["flops_ratio"] > 1 else 9
    )
    lines += [
        "",
        f"Goal: speed-up >= 80 % of the FLOPs ratio. Lowest: {worst[0]} at {worst[1]['efficiency']:.0%}.",
    ]
    md = "\n".join(lines)
    path = write_result("inference", machine(), results, md, args.out)
    print(md)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
