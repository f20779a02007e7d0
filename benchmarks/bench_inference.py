"""Inference speed of each zoo entry beside its baseline, with the FLOPs ratio (CPU, batch 1, eval, one view).

Goal: the measured speed-up over the baseline reaches >= 80 % of the FLOPs ratio (e.g.
`mvit_b_16x4_t0.4_s0.6` >= 3.0x `mvit_b_16x4`). Every model of a family is timed in the same run,
interleaved round by round so that drifts of the machine hit all of them alike.

    python benchmarks/bench_inference.py [--family mvit|swin|all] [--rounds 3]

For other callers (`benchmarks/gpu_check.py`): ``--device cuda --dtype bfloat16`` times under autocast on
that device (synchronised), ``--batch`` clips per forward, ``--models a,b,...`` times these instead of a
family (the first is the baseline).
"""

from __future__ import annotations

import argparse
import contextlib
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
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="autocast to this dtype (float32: none)")  # fmt: skip
    ap.add_argument("--batch", type=int, default=1, help="clips per forward")
    ap.add_argument("--models", default=None, help="comma list, the baseline first (instead of --family)")
    args = ap.parse_args(argv)
    groups = (
        {"models": args.models.split(",")}
        if args.models
        else {f: FAMILIES[f] for f in (list(FAMILIES) if args.family == "all" else [args.family])}
    )
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    autocast = (
        (lambda: torch.autocast(device.type, dtype=getattr(torch, args.dtype)))
        if args.dtype != "float32"
        else contextlib.nullcontext
    )
    torch.manual_seed(0)
    results = {
        "threads": torch.get_num_threads(), "rounds": args.rounds, "device": str(device), "dtype": args.dtype,
        "batch": args.batch, "models": {},
    }  # fmt: skip
    where = f"{torch.cuda.get_device_name(device)}" if cuda else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"{where}, batch {args.batch}, {args.dtype}, eval, `torch.inference_mode`, median of "
        f"{args.rounds} rounds after a warm-up.",
        "",
        f"| model | GFLOPs (fvcore) | s / {'clip' if args.batch == 1 else f'batch of {args.batch}'} | clips/s "
        "| speed-up | FLOPs ratio | speed-up / FLOPs ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for names in groups.values():
        models = {n: stts.build_model(n).eval().to(device) for n in names}
        flops = {
            n: gflops(m, stts.input_shape(m)) for n, m in models.items()
        }  # per view, fp32, on the device
        inputs = {n: torch.randn(stts.input_shape(m, batch=args.batch)).to(device) for n, m in models.items()}
        times: dict[str, list[float]] = {n: [] for n in names}
        with torch.inference_mode(), autocast():
            for n in names:  # warm-up
                models[n](inputs[n])
            for _ in range(args.rounds):
                for n in names:
                    if cuda:
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    models[n](inputs[n])
                    if cuda:
                        torch.cuda.synchronize(device)
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
                f"| {n} | {flops[n]:.2f} | {s:.3f} | {args.batch / s:.2f} | {speedup:.2f}x | {ratio:.2f}x | "
                f"{speedup / ratio:.0%} |"
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
