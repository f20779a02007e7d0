"""Training-step speed: seconds per optimizer step of each STTS model beside its all-token baseline.

One step is what `stts train` does per iteration (`stts.engine.Trainer.train_step`): the recipe's mixup
(MViT), forward with the perturbed top-k in training mode (σ of the recipe, > 0), loss, backward, gradient
clipping (MViT) and an AdamW step over the recipe's parameter groups; ``grad_accum`` 1, so every iteration is
an optimizer step (the Swin recipe accumulates 8 of them per step). Pairs (baseline, STTS):

* debug models, always, at the recipe's batch (MViT 2 videos x 2 clips, Swin 1 clip);
* ``mvit_b_16x4`` / ``mvit_b_16x4_t0.6_s0.9`` and ``swin_b_32x2`` / ``swin_b_32x2_t0.5`` at batch 1 (one clip,
  so no mixup), not with ``--quick``, and only when one step of the STTS model fits ``--budget`` seconds
  (measured first).

Step time: synthetic random clips, a warm-up step excluded, models interleaved round by round, medians.
Peak memory (without ``--quick``): one fresh process per model builds it and runs two steps; on CPU the
growth of its peak RSS (``ru_maxrss``) over the built model, i.e. activations + gradients + AdamW state
(tracemalloc does not see torch's allocator); on CUDA ``torch.cuda.max_memory_allocated`` during the steps.
Data wait: the STTS models (and the debug baselines) fed by `pipelines.build_loader` from a small synthetic
shard cached under .cache/bench/, the share of each iteration spent waiting for the next batch (the first
batch, which builds the pipeline, excluded).

    .venv/bin/python benchmarks/bench_train.py [--quick] [--rounds 3] [--budget 60] [--out DIR]

For other callers (`benchmarks/gpu_check.py`): ``--pairs`` picks pairs by their baseline's name,
``--mixed-precision`` sets Accelerate's precision (memory probes included), ``--recipe-batch`` runs the
zoo models at their recipe's per-process batch instead of one clip, ``--shards DIR`` / ``--decoder`` feed
the data-wait steps from given shards, and ``--loader-steps 0`` leaves the data wait out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
NUM_CLASSES = 400  # a Kinetics-400 head for the synthetic steps (the shard's labels fit in it too)

DEBUG_PAIRS = [("mvit_debug", "mvit_debug_t0.5_s0.5"), ("swin_debug", "swin_debug_t0.5")]
ZOO_PAIRS = [("mvit_b_16x4", "mvit_b_16x4_t0.6_s0.9"), ("swin_b_32x2", "swin_b_32x2_t0.5")]


# ------------------------------------------------------------------------------------------ the step


def config_for(name: str, zoo: bool, data: str = "", recipe_batch: bool = False):
    """The recipe of the model's family with this model; zoo models at one clip per step unless
    ``recipe_batch``."""
    from stts.engine import apply_settings, recipe_for
    from stts.registry import family_of

    settings = {"model.name": name, "grad_accum": 1, "data.shards": data, "tensorboard": False}
    if (
        zoo and not recipe_batch
    ):  # one clip per step; mixup needs two clips, so it is off there (a negligible cost beside the model)
        settings.update(batch_size=1, num_sample=1, mixup=False)
    return apply_settings(recipe_for(family_of(name)), settings)


class Runner:
    """One model, its optimizer (the recipe's groups at the recipe's peak lr) and `stts.engine.train_step`."""

    def __init__(self, name: str, zoo: bool, accelerator, device, recipe_batch: bool = False):
        import torch

        from pipelines.mixup import MVIT_MIXUP, MixUp
        from stts.engine.guard import NonFiniteGuard, supports_deferred_skip
        from stts.engine.optim import param_groups
        from stts.engine.trainer import TrainRun, _adamw
        from stts.registry import build_model, input_shape

        self.name, self.device = name, device
        self.cfg = config_for(name, zoo, recipe_batch=recipe_batch)
        model = build_model(name, num_classes=NUM_CLASSES).train()
        for selector in model.selectors():
            selector.sigma = self.cfg.selection.sigma  # the recipe's σ at the start of training (> 0)
        groups = param_groups(model, self.cfg)
        for g in groups:
            g["lr"] = self.cfg.optim.lr * g["lr_mult"]
        opt = _adamw(groups, self.cfg, fused=True)  # what `stts train` builds
        self.model, self.optimizer = accelerator.prepare(model, opt)
        self.bare = model
        self.accelerator = accelerator
        self.mixup = None
        if self.cfg.loss.mixup:
            self.mixup = MixUp(
                replace(MVIT_MIXUP, num_classes=NUM_CLASSES, label_smoothing=self.cfg.loss.label_smoothing)
            )
        guard = NonFiniteGuard(device, 5, deferred=supports_deferred_skip(self.optimizer, "no"))
        self.run = TrainRun(cfg=self.cfg, accelerator=accelerator, model=self.model, optimizer=self.optimizer,
                            guard=guard, mixup=self.mixup, bare=model)  # fmt: skip

        self.clips = self.cfg.training.batch_size * self.cfg.training.num_sample
        self.shape = input_shape(model, batch=self.clips)
        gen = torch.Generator().manual_seed(0)
        video = torch.randn(self.shape, generator=gen).to(device)
        label = torch.randint(0, NUM_CLASSES, (self.clips,), generator=gen).to(device)
        self.batch = SimpleNamespace(video=video, label=label, key=[str(i) for i in range(self.clips)])

    def step(self, batch=None) -> float:
        """Seconds of one training step (synthetic clips unless a loader's batch is given)."""
        from stts.engine.trainer import train_step

        t0 = time.perf_counter()
        result = train_step(self.run, batch or self.batch)
        sync(self.device)
        if not bool(result.finite):
            raise RuntimeError(f"{self.name}: non-finite loss on synthetic data")
        return time.perf_counter() - t0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def threads() -> int:
    import torch

    return torch.get_num_threads()


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def make_accelerator(mixed_precision: str = "no"):
    from accelerate import Accelerator

    # the CPU rows: on the CPU even where a GPU exists (the GPU rows are `gpu_main`'s)
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=1, cpu=True)


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def probe(name: str, zoo: bool, mixed_precision: str = "no", recipe_batch: bool = False) -> dict:
    """In this (fresh) process: build the model, run two steps; step times and peak memory of training."""
    import torch

    accelerator = make_accelerator(mixed_precision)
    runner = Runner(name, zoo, accelerator, accelerator.device, recipe_batch)
    cuda = accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mib()
    times = [runner.step(), runner.step()]
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # KiB on Linux
    params = sum(p.numel() for p in runner.bare.parameters())
    return {"model": name, "first_step_s": times[0], "step_s": times[1], "peak_mib": peak, "params": params,
            "memory": "cuda max_memory_allocated" if cuda else "peak RSS growth"}  # fmt: skip


def probe_in_subprocess(name: str, zoo: bool, timeout: float | None, extra: list[str] = ()) -> dict | None:
    """`probe` in a fresh interpreter (so that the peak is this model's); None when it ran past ``timeout``.
    ``extra``: more arguments (precision, batch) for the probe."""
    cmd = [sys.executable, __file__, "--probe", name, "--threads", str(threads()), *extra] + (
        ["--zoo"] if zoo else []
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"probe of {name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ data wait


def make_shards(quick: bool) -> Path:
    """Small synthetic VP9 shards (the DALI CPU decoder reads them), built once into .cache/bench/."""
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    per_class, size = (2, 64) if quick else (6, 112)
    out = CACHE / f"train_shards_{4 * per_class}x{size}"
    if (out / ".complete").exists():
        return out
    synth = SyntheticConfig(num_classes=4, train_per_class=per_class, val_per_class=1, frames=64, size=size)
    build_shards(ShardConfig(src="synthetic", out=str(out), workers=2, synthetic=synth, overwrite=True,
                             fsync=False))  # fmt: skip
    (out / ".complete").touch()
    return out


def data_wait(runner: Runner, shards: Path, steps: int, decoder: str = "auto") -> dict:
    """``steps`` training iterations fed by `build_loader`, not counting the first batch of each pass
    (every pass builds its pipeline; a real epoch amortises that over thousands of steps, a benchmark's
    small shard would not): its wait is ``build_s``, over ``passes`` passes."""
    from pipelines import build_loader
    from stts.engine.trainer import specs_for

    cfg = runner.cfg
    clip, aug = specs_for(cfg, runner.bare, train=True)
    loader = build_loader(
        shards, "train", (clip, aug), batch_size=cfg.training.batch_size, num_sample=cfg.training.num_sample,
        seed=0, train=True, num_threads=cfg.data.num_threads, device=runner.device, decoder=decoder,
    )  # fmt: skip
    wait = compute = build = 0.0
    done, epoch = 0, 0
    decoder = None
    while done < steps:
        loader.set_epoch(epoch)
        epoch += 1
        batches = iter(loader)
        first, in_pass = None, 0  # (wait, compute) of this pass's first batch; steps counted after it
        while done < steps:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            runner.step(batch)
            t2 = time.perf_counter()
            if first is None:
                first = (t1 - t0, t2 - t1)
                continue
            wait += t1 - t0
            compute += t2 - t1
            done += 1
            in_pass += 1
        if first is not None and in_pass:
            build += first[0]
        elif first is not None:  # a pass of one batch: it is all there is to count
            wait, compute, done = wait + first[0], compute + first[1], done + 1
        decoder = getattr(loader, "decoder", decoder)
    return {"steps": steps, "wait_s": wait, "step_s": compute, "share": wait / (wait + compute),
            "clips_per_s": steps * runner.clips / (wait + compute), "decoder": decoder, "passes": epoch,
            "build_s": build}  # fmt: skip


# -------------------------------------------------------------------------------------------- GPU rows


def make_h264_shards(videos: int, workers: int) -> Path:
    """What a Kinetics run on a GPU reads: bench_shard's Kinetics-like corpus (480x360 H.264, 30 fps, 10 s)
    re-encoded by `stts shard --reencode` at its defaults (H.264 with B-frames, GOP 16, short side 320),
    built once into .cache/bench/."""
    from bench_shard import make_corpus

    from shards.build import ShardConfig, build_shards
    from shards.reencode import ReencodeSpec

    root = make_corpus(videos, 10.0)
    out = CACHE / f"train_shards_h264_gop16_{videos}"
    if (out / ".complete").exists():
        return out
    cfg = ShardConfig(src="kinetics400", root=str(root), split="train", out=str(out), probe="fast",
                      workers=workers, reencode=ReencodeSpec(short_side=320, gop=16, codec="h264"),
                      fsync=False, overwrite=True)  # fmt: skip
    build_shards(cfg)
    (out / ".complete").touch()
    return out


def real_run(
    name: str, shards: Path, *, warmup: int, steps: int, window: int, decoder: str, precision: str = "auto"
) -> dict:
    """`stts train` itself (`stts.engine.train`) for ``warmup + steps`` iterations of the family's recipe:
    its per-process batch and augmentation through `build_loader`, bf16 autocast (the CUDA default), fused
    AdamW, the step without host syncs; one optimizer step per iteration (``grad_accum`` 1). The figures
    are the trainer's own logging windows after the warm-up (its data wait: CUDA events on the training
    stream, `stts.engine.meter`)."""
    import tempfile

    import torch

    from stts.engine import apply_settings, recipe_for, train
    from stts.registry import family_of
    from stts.runtime import resolve_precision

    out = Path(tempfile.mkdtemp(prefix=f"bench-train-{name}-"))
    settings = {
        "model.name": name, "data.shards": str(shards), "decoder": decoder, "grad_accum": 1,
        "max_steps": warmup + steps, "epochs": 100, "val_split": None, "tensorboard": False,
        "log_every": window, "checkpoint_every": 0, "out": str(out), "num_threads": 4,
        "mixed_precision": precision,
    }  # fmt: skip
    cfg = apply_settings(recipe_for(family_of(name)), settings)
    cuda = torch.cuda.is_available()  # (a CPU runs this path too: tests/cli/test_bench.py)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train(cfg, resume=False, progress=False)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    windows = [e for e in log if e["event"] == "train" and e["iteration"] > warmup]
    if result.stopped != "max_steps" or not windows:
        raise RuntimeError(f"{name}: the run stopped at {result.state.iteration} ({result.stopped})")
    times = [window / e["steps_per_s"] for e in windows]
    total, timed = sum(times), window * len(windows)
    clips = cfg.training.batch_size * cfg.training.num_sample
    shutil.rmtree(out, ignore_errors=True)
    return {
        "model": name, "clips_per_step": clips, "steps": timed, "s_per_step": total / timed,
        "clips_per_s": clips * timed / total,
        "data_wait": sum(e["data_wait"] * t for e, t in zip(windows, times, strict=True)) / total,
        "data_wait_measured_by": windows[-1].get("data_wait_measured_by"), "peak_gpu_mib": peak,
        "precision": resolve_precision(cfg.system.mixed_precision, "cuda" if cuda else "cpu"),
        "decoder": decoder,
        "run_s": wall, "losses": [e["loss"] for e in windows],
    }  # fmt: skip


def gpu_main(args) -> None:
    import torch

    t_start = time.perf_counter()
    chosen = set(args.pairs.split(",")) if args.pairs else None
    pairs = [(b, s) for b, s in [*DEBUG_PAIRS, *ZOO_PAIRS] if b in chosen] if chosen else None
    pairs = pairs or (DEBUG_PAIRS if args.quick else ZOO_PAIRS)
    steps = args.steps or args.rounds or (10 if args.quick else 40)
    warmup = args.warmup if args.warmup is not None else (5 if args.quick else 10)
    window = 5
    steps = -(-steps // window) * window
    warmup = -(-warmup // window) * window
    decoder = args.decoder or "dali-gpu"
    videos = None if args.shards else args.videos or (16 if args.quick else 128)
    shards = args.shards or make_h264_shards(videos, workers=min(16, os.cpu_count() or 1))
    source = (
        f"the shards {shards}"
        if args.shards
        else f"{videos} H.264 videos re-encoded with `stts shard --reencode` defaults (GOP 16, B-frames, short "
        "side 320)"
    )
    print(f"shards ready at {time.perf_counter() - t_start:.0f} s: {shards}", flush=True)
    rows = {}
    for base, sel in pairs:
        for name in (base, sel):
            rows[name] = real_run(
                name, shards, warmup=warmup, steps=steps, window=window, decoder=decoder,
                precision=args.mixed_precision or "auto",
            )  # fmt: skip
            r = rows[name]
            print(f"{name}: {r['s_per_step']:.3f} s/step, {r['clips_per_s']:.1f} clips/s, data wait "
                  f"{r['data_wait']:.1%}, peak {r['peak_gpu_mib'] or 0:,.0f} MiB", flush=True)  # fmt: skip
    info = machine()
    goal = rows.get("mvit_b_16x4_t0.6_s0.9")
    lines = [
        f"{torch.cuda.get_device_name(0)}; `stts train` itself (`stts.engine.train`) per model: the family "
        f"recipe's per-process batch and full augmentation through `build_loader` (decoder {decoder}) "
        f"from {source}, bf16 autocast, fused AdamW, grad_accum 1 (one optimizer step per iteration); "
        f"{warmup} warm-up iterations, then {steps} timed (the trainer's own logging windows of {window}). "
        "Data wait: CUDA events on the training stream around each `next()` (`stts.engine.meter`). Memory: "
        "`torch.cuda.max_memory_allocated` over the run.",
        "",
        "| model | clips/step | s/step | clips/s | speed-up | data wait | peak GPU MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for base, sel in pairs:
        for name in (base, sel):
            r = rows[name]
            speed = rows[base]["s_per_step"] / r["s_per_step"]
            mem = "n/a" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:,.0f}"
            lines.append(f"| {name} | {r['clips_per_step']} | {r['s_per_step']:.3f} | {r['clips_per_s']:.1f} | "
                         f"{speed:.2f}x | {r['data_wait']:.1%} | {mem} |")  # fmt: skip
    if goal is not None:
        verdict = "met" if goal["data_wait"] < 0.05 else "NOT met"
        lines += ["", f"Goal: < 5 % of step time waiting for data while training mvit_b_16x4_t0.6_s0.9: "
                      f"{goal['data_wait']:.1%} — {verdict}."]  # fmt: skip

    def wait(r: dict) -> dict:
        return {"share": r["data_wait"], "steps": r["steps"], "decoder": r["decoder"],
                "measured_by": r["data_wait_measured_by"], "clips_per_s": r["clips_per_s"]}  # fmt: skip

    # `pairs` in the schema of the CPU rows (what `stts bench` and `make gpu-check` read)
    pair_rows = [
        {"baseline": b, "stts": s, "zoo": b in dict(ZOO_PAIRS), "clips": rows[s]["clips_per_step"],
         "baseline_s": rows[b]["s_per_step"], "stts_s": rows[s]["s_per_step"],
         "speedup": rows[b]["s_per_step"] / rows[s]["s_per_step"],
         "baseline_peak_mib": rows[b]["peak_gpu_mib"], "stts_peak_mib": rows[s]["peak_gpu_mib"],
         "baseline_data_wait": wait(rows[b]), "stts_data_wait": wait(rows[s])}
        for b, s in pairs
    ]  # fmt: skip
    results = {"device": "cuda", "quick": args.quick, "warmup": warmup, "steps": steps, "videos": videos,
               "shards": str(shards), "decoder": decoder, "pairs": pair_rows, "rows": rows,
               "seconds": time.perf_counter() - t_start}  # fmt: skip
    md = "\n".join(lines)
    path = write_result("train", info, results, md, args.out)
    print(md)
    print(f"\nwritten: {path}")


# -------------------------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: debug models, 1 round, 1 thread, no memory"
    )
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per model (default 3; quick 1)")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds one zoo step may take (else skipped)")
    ap.add_argument("--loader-steps", type=int, default=None, help="loader-fed steps (default 8, zoo 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; quick: 1)")
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: benchmarks/results)")
    ap.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="cuda: the GPU rows (real loader, bf16, zoo pairs); cpu: the CPU rows; auto: cuda if present",
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="cuda: timed iterations per model (default 40; quick 10)"
    )
    ap.add_argument(
        "--warmup", type=int, default=None, help="cuda: iterations before timing (default 10; quick 5)"
    )
    ap.add_argument(
        "--videos", type=int, default=None, help="cuda: videos in the H.264 shards (default 128; quick 16)"
    )
    ap.add_argument("--decoder", default=None, help="the loader's decoder (default: cuda dali-gpu, CPU auto)")
    ap.add_argument("--pairs", default=None, help="comma list of pairs by baseline name (mvit_debug, "
                    "swin_debug, mvit_b_16x4, swin_b_32x2; default: all; zoo pairs never with --quick on a CPU)")  # fmt: skip
    ap.add_argument("--mixed-precision", default=None, choices=["auto", "no", "bf16", "fp16"],
                    help="CPU rows: Accelerate's precision (default no); cuda: the runs' (default auto: bf16)")  # fmt: skip
    ap.add_argument("--recipe-batch", action="store_true",
                    help="CPU rows: zoo models at the recipe's batch, not 1 clip (the cuda rows always are)")  # fmt: skip
    ap.add_argument("--shards", type=Path, default=None,
                    help="CPU rows: shards of the data wait (default: synthetic VP9); cuda: the runs' (default: made)")  # fmt: skip
    ap.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one model's memory, in a fresh process
    ap.add_argument("--zoo", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(args.probe, args.zoo, args.mixed_precision or "no", args.recipe_batch)))
        return
    if args.device == "cuda" or args.device == "auto" and _cuda():
        gpu_main(args)
        return
    args.decoder = args.decoder or "auto"
    args.mixed_precision = args.mixed_precision or "no"
    if args.mixed_precision == "auto":
        args.mixed_precision = "no"  # auto on a CPU
    rounds = args.rounds or (1 if args.quick else 3)
    loader_steps = args.loader_steps if args.loader_steps is not None else (2 if args.quick else 8)
    chosen = set(args.pairs.split(",")) if args.pairs else None
    probe_args = ["--mixed-precision", args.mixed_precision] + (
        ["--recipe-batch"] if args.recipe_batch else []
    )
    t_start = time.perf_counter()

    import torch

    torch.manual_seed(0)
    if args.quick and not args.threads:  # a smoke run: one thread is not slowed down by a busy machine
        torch.set_num_threads(1)
    notes: list[str] = []
    pairs = [(b, s, False) for b, s in DEBUG_PAIRS if chosen is None or b in chosen]
    probes: dict[str, dict] = {}
    if not args.quick:
        for base, sel, zoo in pairs:
            for name in (base, sel):
                probes[name] = probe_in_subprocess(name, zoo, None, probe_args)
        for base, sel in [(b, s) for b, s in ZOO_PAIRS if chosen is None or b in chosen]:
            # the STTS model first (the cheaper one): when its step does not fit the budget, neither does
            # the baseline's; a probe builds the model and runs two steps
            got = probe_in_subprocess(sel, True, 2 * args.budget + 60, probe_args)
            if got is None or got["step_s"] > args.budget:
                took = "more than the budget" if got is None else f"{got['step_s']:.0f} s"
                notes.append(f"{base} / {sel} skipped: one training step of {sel} at batch 1 took {took} "
                             f"(budget {args.budget:g} s per step on this machine)")  # fmt: skip
                print(notes[-1], flush=True)
                continue
            probes[sel] = got
            probes[base] = probe_in_subprocess(base, True, None, probe_args)
            pairs.append((base, sel, True))
            print(f"probed {base} / {sel}: {probes[base]['step_s']:.1f} / {got['step_s']:.1f} s per step",
                  flush=True)  # fmt: skip

    accelerator = make_accelerator(args.mixed_precision)
    device = accelerator.device
    runners = {
        name: Runner(name, zoo, accelerator, device, args.recipe_batch)
        for b, s, zoo in pairs
        for name in (b, s)
    }
    for r in runners.values():  # warm-up
        r.step()
    times: dict[str, list[float]] = {n: [] for n in runners}
    for i in range(rounds):
        for n, r in runners.items():
            times[n].append(r.step())
        print(
            f"round {i + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()),
            flush=True,
        )

    print(f"timed in {time.perf_counter() - t_start:.0f} s", flush=True)
    shards = args.shards or (make_shards(args.quick) if loader_steps else None)
    print(f"shards ready at {time.perf_counter() - t_start:.0f} s", flush=True)
    waits: dict[str, dict] = {}
    for base, sel, zoo in pairs if loader_steps else []:
        if args.quick and base != DEBUG_PAIRS[0][0]:
            continue
        for name in (sel,) if zoo or args.quick else (base, sel):
            waits[name] = data_wait(
                runners[name], shards, 2 if zoo and args.loader_steps is None else loader_steps, args.decoder
            )
            print(f"data wait {name}: {waits[name]['share']:.1%} ({time.perf_counter() - t_start:.0f} s)",
                  flush=True)  # fmt: skip

    rows = []
    for base, sel, zoo in pairs:
        b_s, s_s = statistics.median(times[base]), statistics.median(times[sel])
        row = {
            "baseline": base, "stts": sel, "zoo": zoo, "clips": runners[sel].clips, "input": list(runners[sel].shape),
            "baseline_s": b_s, "stts_s": s_s, "speedup": b_s / s_s,
            "baseline_times": times[base], "stts_times": times[sel],
            "baseline_peak_mib": probes.get(base, {}).get("peak_mib"),
            "stts_peak_mib": probes.get(sel, {}).get("peak_mib"),
            "baseline_data_wait": waits.get(base), "stts_data_wait": waits.get(sel),
        }  # fmt: skip
        rows.append(row)
    info = machine()
    results = {
        "quick": args.quick, "rounds": rounds, "threads": torch.get_num_threads(), "device": str(device),
        "mixed_precision": args.mixed_precision, "recipe_batch": args.recipe_batch,
        "budget_s": args.budget, "pairs": rows, "probes": probes, "notes": notes,
        "seconds": time.perf_counter() - t_start,
    }  # fmt: skip

    def mib(x):
        return "n/a" if x is None else f"{x:,.0f}"

    def share(w):
        return "n/a" if w is None else f"{w['share']:.0%}"

    mem_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS growth (ru_maxrss)"
    lines = [
        f"{device.type.upper()}, {torch.get_num_threads()} threads; one optimizer step = `Trainer.train_step` "
        "(recipe mixup for the MViT debug pair (batch 1 has none), forward with the perturbed top-k in "
        "training mode at the recipe's σ, loss, "
        "backward, clipping for MViT, AdamW over the recipe's param groups), grad_accum 1. Synthetic random "
        f"clips; warm-up excluded; models interleaved; median of {rounds} rounds.",
        "",
        f"Memory: {mem_kind} of a fresh process over its built model during two steps (activations + "
        "gradients + AdamW state). "
        + (
            "Data wait: share of each iteration spent waiting for `build_loader` "
            f"({'shards ' + str(shards) if args.shards else 'synthetic VP9 shard ' + shards.name}, decoder "
            f"{next(iter(waits.values()))['decoder']}, the first batch of each pass excluded: it builds the pass's "
            "pipeline)."
            if waits
            else "Data wait: not measured (`--loader-steps 0`)."
        ),
        "",
        "| baseline → STTS | clips/step | baseline s/step | STTS s/step | speed-up | baseline MiB | STTS MiB "
        "| data wait (baseline / STTS) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['baseline']} → {r['stts']} | {r['clips']} | {r['baseline_s']:.3f} | {r['stts_s']:.3f} | "
            f"{r['speedup']:.2f}x | {mib(r['baseline_peak_mib'])} | {mib(r['stts_peak_mib'])} | "
            f"{share(r['baseline_data_wait'])} / {share(r['stts_data_wait'])} |"
        )
    lines += ["", *[f"- {n}" for n in notes]]
    used, cores = torch.get_num_threads(), os.cpu_count() or 1
    if not args.quick and used < cores:
        lines.append(f"- torch ran {used} of {cores} cores' threads (`--threads {used}`). With torch's default "
                     f"{cores} threads and another job busy on the machine, OpenMP threads wait on the busy "
                     "core: every debug-model step took 3-4 s, 25-65x its single-thread time in a side check "
                     "(MViT-B: ~30 s), so ratios measured that way say nothing.")  # fmt: skip
    if not args.quick:
        lines.append("- The CPU was shared with other engineers' jobs during this run: absolute times move "
                     "between runs; ratios within one run (interleaved) are what count.")  # fmt: skip
    md = "\n".join(lines).rstrip()
    path = write_result("train", info, results, md, args.out)
    print(md)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
