"""Inference speed of each zoo entry beside its baseline, with the FLOPs ratio (eval, one view per clip).

On a CPU: batch 1, fp32 (the rows kept since the first version). On CUDA (``--device cuda``, or ``auto``
where a GPU exists): bf16 autocast (what `stts eval` uses there), TF32, batches of 16 clips, each forward
timed between two synchronisations. ``--models a,b,...`` times these instead of a family (the first is
the baseline); ``--dtype float32|bfloat16|float16`` is ``--precision no|bf16|fp16``.

Goal: the measured speed-up over the baseline reaches >= 80 % of the FLOPs ratio (e.g.
`mvit_b_16x4_t0.4_s0.6` >= 3.0x `mvit_b_16x4`). Every model of a family is timed in the same run,
interleaved round by round so that drifts of the machine hit all of them alike.

    python benchmarks/bench_inference.py [--family mvit|swin|all] [--rounds 3] [--device auto|cpu|cuda]
        [--batch N] [--precision auto|no|bf16|fp16] [--models a,b] [--out DIR]
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


def _timer(device: torch.device):
    """Seconds of ``fn()``: on CUDA between two synchronisations (the kernels run asynchronously)."""

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return timed


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: benchmarks/results)")
    ap.add_argument("--device", default="auto",
                    help="auto (cuda if present), cpu, cuda, cuda:1 ...: on CUDA the GPU rows (bf16, batched)")  # fmt: skip
    ap.add_argument("--batch", type=int, default=None, help="clips per forward (default: CPU 1, CUDA 16)")
    ap.add_argument("--precision", choices=["auto", "no", "bf16", "fp16"], default="auto",
                    help="autocast (default auto: bf16 on CUDA, fp32 on the CPU)")  # fmt: skip
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                    help="the same as --precision no / bf16 / fp16")  # fmt: skip
    ap.add_argument("--iters", type=int, default=1, help="forwards per timed round (default 1)")
    ap.add_argument("--models", default=None, help="comma list, the baseline first (instead of --family)")
    return ap


def main(argv: list[str] | None = None) -> None:
    from stts.runtime import allow_tf32, autocast, resolve_precision

    args = parser().parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    use_cuda = device.type == "cuda"
    batch = args.batch or (16 if use_cuda else 1)
    iters = args.iters
    if args.dtype is not None:
        args.precision = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[args.dtype]
    precision = resolve_precision(args.precision, device)
    if use_cuda:
        allow_tf32(True)
    timed = _timer(device)
    groups = (
        {"models": args.models.split(",")}
        if args.models
        else {f: FAMILIES[f] for f in (list(FAMILIES) if args.family == "all" else [args.family])}
    )
    torch.manual_seed(0)
    results = {"threads": torch.get_num_threads(), "rounds": args.rounds, "device": device.type,
               "batch": batch, "iters": iters, "precision": precision, "models": {}}  # fmt: skip
    where = (
        f"CUDA ({torch.cuda.get_device_name(device)}), batch {batch}, {precision} autocast, TF32 on, "
        f"{iters} forward{'s' * (iters > 1)} per round"
        if use_cuda
        else f"CPU, batch {batch}, {'fp32' if precision == 'no' else precision + ' autocast'}"
    )
    lines = [
        f"{where}, eval, `torch.inference_mode`, {torch.get_num_threads()} threads, median of {args.rounds} "
        "rounds after a warm-up.",
        "",
        "| model | GFLOPs (fvcore) | s / clip | clips/s | speed-up | FLOPs ratio | speed-up / FLOPs ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for names in groups.values():
        models = {n: stts.build_model(n).eval().to(device) for n in names}
        # per clip, fp32, on the timing device (the count does not depend on it; a Swin-B forward on the
        # CPU of a GPU machine cost seconds per model for nothing)
        flops = {n: gflops(m, stts.input_shape(m)) for n, m in models.items()}
        inputs = {n: torch.randn(stts.input_shape(m, batch=batch), device=device) for n, m in models.items()}
        times: dict[str, list[float]] = {n: [] for n in names}

        def run(model, x) -> None:
            with autocast(device, precision):
                for _ in range(iters):
                    model(x)

        with torch.inference_mode():
            for n in names:  # warm-up (cuDNN algorithm choice, allocator)
                run(models[n], inputs[n])
            for _ in range(args.rounds):
                for n in names:
                    times[n].append(timed(lambda m=models[n], x=inputs[n]: run(m, x)) / (iters * batch))
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
        del models, inputs
        if use_cuda:
            torch.cuda.empty_cache()
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
