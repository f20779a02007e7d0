"""The training engine: one `train(cfg)` for one CPU process, many GPUs and many nodes (Accelerate), with
DeepSpeed ZeRO-1/2 as an option.

Every process builds its own loader over its own slice of the shards (`pipelines.build_loader` with
``rank``/``world_size``): nothing is dispatched from rank 0. `Trainer.fit` sets a run up (`TrainRun`) and
loops over epochs; an epoch (`Trainer._epoch`) is a short loop over named steps, each with what holds after
it:

1. `_batches`: the next ``batch_size · num_sample`` clips on the device, normalised, (B, 3, T, H, W); the
   time spent waiting for them metered (`stts.engine.meter`: CUDA events on a GPU);
2. `_set_schedule`: σ of the selectors and every group's lr for this iteration (`Schedule`);
3. `train_step`: mixup/cutmix (MViT recipe) → soft targets; forward (bf16 autocast by default on CUDA);
   loss; backward through `accelerator.accumulate` (loss / grad_accum; DDP sync and the optimizer step only
   at the window's last iteration), clipping by global norm, the fused AdamW step — all without a host
   sync: a loss that is not finite on some rank is skipped on every rank on the device
   (`stts.engine.guard`);
4. `_account`: counters; the guard's flags are read (`_settle`) only where a decision needs them, and
   ``max_bad_steps`` non-finite losses in a row stop the run with the last good checkpoint intact;
5. `_log_window`: every ``log_every`` iterations, metrics.jsonl, TensorBoard and the progress line;
6. `_checkpoint_if_due`: ``max_steps`` and ``checkpoint_every``;
and at the epoch's end `_end_epoch`: validation when due, ``model.pt``, ``best.pt``, a checkpoint.

Checkpoints (``RUN/checkpoints/step-XXXXXXXX/``: Accelerate's state — model, optimizer, grad scaler, every
rank's RNG — plus ``trainer_state.json``: iteration, epoch, position in the epoch, best top-1) are written
to a temporary name and renamed at each epoch end, every ``checkpoint_minutes`` (30) and every
``checkpoint_every`` optimizer steps (off), and when SIGINT or SIGTERM stop the run (after the current
optimizer step; a second Ctrl-C stops at once); the last
``keep_last`` are kept. ``RUN/model.pt`` (our format, with model name, config and class names) is
rewritten at each epoch end, ``RUN/best.pt`` when validation top-1 improves. Resuming (``resume=True`` or
the same ``out`` again) restores all of it and replays the epoch's loader up to the saved position (the
loader's order and clips are functions of seed and epoch), so a killed and resumed run ends with the
weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import RESUMABLE, ConfigError, TrainConfig, load_config, save_config
from .guard import NonFiniteGuard, supports_deferred_skip
from .meter import WindowMeter
from .optim import Schedule, param_groups

__all__ = [
    "StepResult",
    "TrainError",
    "TrainResult",
    "TrainRun",
    "Trainer",
    "find_resume_point",
    "train",
    "train_step",
]

STATE_FILE = "trainer_state.json"
DEEPSPEED_DIR = Path(__file__).with_name("deepspeed")


class TrainError(Exception):
    """A run that cannot start or go on; the message says what to do."""


@dataclass
class TrainState:
    iteration: int = 0  # loader iterations done, over all epochs
    epoch: int = 0
    epoch_iter: int = 0  # iterations done in `epoch`
    optimizer_steps: int = 0
    best_top1: float | None = None
    bad_steps: int = 0  # consecutive non-finite losses
    skipped_steps: int = 0  # all non-finite losses


@dataclass
class TrainResult:
    out: Path
    state: TrainState
    history: list[dict] = field(default_factory=list)  # validation results
    stopped: str | None = None  # why the run stopped early (None: finished)
    main_process: bool = True  # False on the other ranks of a multi-process run (they print no summary)
    signal: int | None = None  # the signal that interrupted the run (stopped == "interrupted")


@dataclass
class StepResult:
    """What `train_step` reports, without waiting for the device: the loss (a 0-dim tensor), whether it was
    finite on every rank (a 0-dim bool tensor where the skip happens on the device, else a bool) and whether
    this iteration ended an accumulation window (an optimizer step unless skipped)."""

    loss: torch.Tensor
    finite: torch.Tensor | bool
    stepped: bool


@dataclass
class TrainRun:
    """What one run holds while it trains (built by `Trainer._setup`). `train_step` reads ``cfg``,
    ``accelerator``, ``model``, ``optimizer``, ``mixup``, ``guard`` and ``precision``, so a benchmark can build
    one without a loader."""

    cfg: TrainConfig
    accelerator: Any
    model: Any  # as prepared by Accelerate (DDP-wrapped under several processes)
    optimizer: Any
    guard: NonFiniteGuard
    precision: str = "no"  # resolved: no | bf16 | fp16
    mixup: Any = None
    bare: Any = None  # the model itself
    loader: Any = None
    val_loader: Any = None
    schedule: Schedule | None = None
    total_steps: int = 0
    display: Any = None
    keys_file: Any = None
    window: WindowMeter = field(default_factory=WindowMeter)
    sigma: float = 0.0  # this iteration's
    stepped: bool = False  # whether this iteration took an optimizer step (known once settled)
    unsettled_steps: int = 0  # optimizer steps taken since the guard last settled, assuming all finite


# ------------------------------------------------------------------------------------------ helpers


def specs_for(cfg: TrainConfig, model, *, train: bool):
    """The recipe's (ClipSpec, AugmentSpec) fitted to the model's input, with ``cfg.clip`` / ``cfg.aug``;
    validation uses the recipe's validation clips (`Recipe.val_clip`) at ``cfg.eval.val_views``."""
    from pipelines.recipes import recipe_for_model
    from stts.registry import family_spec

    recipe = family_spec(cfg.recipe).recipe
    views = None if train else tuple(cfg.eval.val_views)
    data = recipe.clip if train else recipe.val_clip
    return recipe_for_model(
        model, family=data, views=views, train=train, clip=cfg.clip.values, aug=cfg.aug.values
    )


def find_resume_point(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run (complete: renamed from its temporary name,
    with its trainer state inside)."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _launch_device() -> str:
    """The device type Accelerate will give this process (before it is created: precision depends on it)."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return "cuda" if torch.cuda.is_available() and not use_cpu else "cpu"


def _adamw(groups: list[dict], cfg: TrainConfig, *, fused: bool) -> torch.optim.Optimizer:
    """The recipe's AdamW; fused (one kernel for every parameter: ~3x faster than the multi-tensor update
    even on a CPU, and it can skip a step on the device, `stts.engine.guard`) where this torch has it."""
    opt = cfg.optim
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps, fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch or an unsupported device
            pass
    return torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps)


def _deepspeed_config(cfg: TrainConfig, clips_per_iter: int, precision: str | None = None) -> dict:
    path = (
        Path(cfg.system.deepspeed) if cfg.system.deepspeed else DEEPSPEED_DIR / f"zero{cfg.system.zero}.json"
    )
    if not path.is_file():
        raise TrainError(f"DeepSpeed config {path} not found; give a JSON file or use --zero 1|2")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TrainError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    fill = {
        "train_micro_batch_size_per_gpu": clips_per_iter,
        "gradient_accumulation_steps": cfg.training.grad_accum,
        "gradient_clipping": cfg.optim.clip_grad or 0.0,
    }
    for key, value in fill.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    precision = precision or cfg.system.mixed_precision
    for key, on in (("bf16", precision == "bf16"), ("fp16", precision == "fp16")):
        section = ds.setdefault(key, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = on
    return ds


def _settings(cfg: TrainConfig, device) -> dict[str, Any]:
    """Dotted key → value of everything that decides the computation on ``device`` (``clip`` and ``aug`` as
    wholes)."""
    out: dict[str, Any] = {}
    for section, values in cfg.resolved(device).items():
        if section in ("clip", "aug"):
            out[section] = values
        else:
            out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, out: Path, device) -> None:
    a, b = _settings(saved, device), _settings(cfg, device)
    differ = [k for k in a if k not in RESUMABLE and a[k] != b.get(k)]
    if differ:
        shown = ", ".join(f"{k}: {a[k]!r} → {b.get(k)!r}" for k in differ[:4])
        raise TrainError(
            f"{out} holds a run with other settings ({shown}); resume it with the same options, "
            "or give another --out"
        )


class _DeepSpeedProbeFilter(logging.Filter):
    """Accelerate imports DeepSpeed (when installed) on every run, ZeRO or not (`unwrap_model`), and
    DeepSpeed then logs which accelerator it found from its module real_accelerator — a warning on every
    CPU run ("Setting accelerator to CPU ...") that nothing can act on. Only that module's records of the
    "DeepSpeed" logger are dropped; DeepSpeed's other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.module != "real_accelerator"


def _quiet_deepspeed_probe() -> None:
    logger = logging.getLogger("DeepSpeed")  # the logger deepspeed.utils.logging creates (same object)
    if not any(isinstance(f, _DeepSpeedProbeFilter) for f in logger.filters):
        logger.addFilter(_DeepSpeedProbeFilter())


# ------------------------------------------------------------------------------------------ one step


def train_step(run: TrainRun, batch) -> StepResult:
    """Forward, loss, backward and (at the end of an accumulation window) the optimizer step, with no host
    sync where the guard is deferred. A loss that is not finite on some rank skips the iteration on every
    rank (`stts.engine.guard`)."""
    cfg, accelerator, model, optimizer, guard = run.cfg, run.accelerator, run.model, run.optimizer, run.guard
    video, label = batch.video, batch.label
    if cfg.uses_deepspeed and run.precision != "no":
        video = video.to(torch.bfloat16 if run.precision == "bf16" else torch.float16)
    with accelerator.accumulate(model):
        if run.mixup is not None:
            video, targets = run.mixup(video, label)
        with accelerator.autocast() if not cfg.uses_deepspeed else nullcontext():
            logits = model(video)
        if run.mixup is not None:
            from pipelines.mixup import soft_cross_entropy

            loss = soft_cross_entropy(logits.float(), targets)
        else:
            loss = F.cross_entropy(logits.float(), label, label_smoothing=cfg.loss.label_smoothing)
        finite = guard.agree(torch.isfinite(loss.detach()))
        if not guard.deferred:
            finite = bool(finite.item())  # one host read per step (DeepSpeed, fp16)
            if not finite:
                optimizer.zero_grad(set_to_none=True)
                return StepResult(loss=loss.detach(), finite=False, stepped=False)
        accelerator.backward(loss)
        if guard.deferred:
            keep = guard.keep(finite)
            if cfg.training.grad_accum > 1:  # later iterations of the window add to these gradients
                guard.drop_unless(keep, model.parameters())
            guard.arm(optimizer, keep)
        if accelerator.sync_gradients and cfg.optim.clip_grad and not cfg.uses_deepspeed:
            accelerator.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=loss.detach(), finite=finite, stepped=accelerator.sync_gradients)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT held back (delivered when the block ends) while the loaders start their decoding processes,
    which inherit the mask: a Ctrl-C — sent to the whole foreground process group — then reaches the trainer
    only, which stops after the step with a checkpoint, instead of killing the workers mid-batch."""
    if not _in_main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _any_rank(accelerator, *flags: bool) -> list[bool]:
    """Each flag: True on some rank (every rank decides the same, at the same step)."""
    if accelerator.num_processes == 1:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=accelerator.device)
    return [v > 0 for v in accelerator.reduce(t, reduction="sum").tolist()]


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e7 else f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(
        self, cfg: TrainConfig, *, resume: bool | None = None, console=None, progress: bool | str = True
    ):
        if not cfg.data.shards:
            raise TrainError("no data: give --data SHARDS (a folder made by `stts shard`)")
        self.cfg = cfg
        self.out = Path(cfg.checkpoint.out)
        from stts.data import DataError, shard_classes

        try:
            self.classes = shard_classes(cfg.data.shards, cfg.data.train_split)
        except DataError as err:
            raise TrainError(str(err)) from None
        self.console = console
        # True: a bar on a terminal, plain lines otherwise ("auto"); False: nothing ("none")
        self.progress_mode = {True: "auto", False: "none"}.get(progress, progress)
        self._resume_request = resume
        self.state = TrainState()
        self.history: list[dict] = []
        self._stop_signal: int | None = None  # SIGINT / SIGTERM received: stop after the step
        self._last_save = time.monotonic()

    # ---- setup
    def _accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, ProjectConfiguration

        cfg = self.cfg
        _quiet_deepspeed_probe()
        if not torch.distributed.is_initialized():
            # Accelerate keeps process-wide singletons: a second run in the same process (the demo, tests,
            # a notebook) with another precision would be refused. A run is a whole new training, so start
            # from a clean state (private API of the pinned accelerate 1.15; multi-process runs keep theirs).
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        kwargs: dict[str, Any] = {
            "gradient_accumulation_steps": cfg.training.grad_accum,
            "project_config": ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out)),
            "log_with": "tensorboard" if cfg.logging.tensorboard else None,
        }
        if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # CPU processes talk over gloo (a backend given to a single process would break it)
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        if cfg.uses_deepspeed:
            clips = cfg.training.batch_size * cfg.training.num_sample
            ds = _deepspeed_config(cfg, clips, self.precision)
            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds)
        else:
            kwargs["mixed_precision"] = self.precision
        return Accelerator(**kwargs)

    def _build_model(self):
        from stts.checkpoint import CheckpointError, read_checkpoint
        from stts.registry import build_model, spec_of
        from stts.selection import SELECTOR_KEY

        cfg = self.cfg
        try:
            model = build_model(cfg.model.name, num_classes=len(self.classes), **cfg.model.overrides)
        except ValueError as err:
            raise TrainError(str(err)) from None
        if cfg.model.init:
            spec = spec_of(model)
            try:
                state, _ = read_checkpoint(cfg.model.init)
            except CheckpointError as err:
                raise TrainError(f"--init: {err}") from None
            state = spec.convert_state(state)  # torchvision and other layouts the family knows
            own = model.state_dict()
            keep = {
                k: v
                for k, v in state.items()
                if k in own and v.shape == own[k].shape and SELECTOR_KEY not in k
            }
            model.load_state_dict(keep, strict=False)
            missing = sorted(k for k in own if k not in keep and SELECTOR_KEY not in k)
            self.init_report = {"loaded": len(keep), "fresh": missing, "ignored": len(state) - len(keep)}
            backbone_missing = [k for k in missing if not k.startswith(spec.head_prefixes)]
            if backbone_missing:
                raise TrainError(
                    f"--init {cfg.model.init} does not fit {cfg.model.name}: {len(backbone_missing)} backbone tensors "
                    f"missing or of other shapes (e.g. {backbone_missing[0]}); is it the right model?"
                )
        return model

    def _loaders(self, model, rank: int, world: int, device):
        from pipelines import build_loader

        cfg = self.cfg
        clip, aug = specs_for(cfg, model, train=True)
        common = {"device": device, "rank": rank, "world_size": world, "decoder": cfg.data.decoder}
        if torch.device(device).type == "cuda" and self.precision != "no":
            # batches arrive in the autocast precision (half the copy and memory)
            common["dtype"] = torch.bfloat16 if self.precision == "bf16" else torch.float16
        train = build_loader(
            cfg.data.shards,
            cfg.data.train_split,
            (clip, aug),
            batch_size=cfg.training.batch_size,
            seed=cfg.training.seed,
            train=True,
            num_threads=cfg.data.num_threads,
            num_sample=cfg.training.num_sample,
            **common,
        )
        val = None
        if cfg.data.val_split and cfg.eval.eval_every:
            vclip, vaug = specs_for(cfg, model, train=False)
            val = build_loader(
                cfg.data.shards,
                cfg.data.val_split,
                (vclip, vaug),
                batch_size=max(1, cfg.training.batch_size * cfg.training.num_sample),
                train=False,
                views=tuple(cfg.eval.val_views),
                num_threads=cfg.data.num_threads,
                **common,
            )
        return train, val

    # ---- checkpoints
    def _save(self, accelerator, model, *, reason: str) -> None:
        st = self.state
        root = self.out / "checkpoints"
        name = f"step-{st.optimizer_steps:08d}"
        final, tmp = root / name, root / f".{name}.tmp"
        if accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            payload = {**asdict(st), "reason": reason, "time": time.time()}
            (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())
            for old in done[: -self.cfg.checkpoint.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        self._last_save = time.monotonic()

    def _save_model(self, accelerator, model, path: Path, **extra) -> None:
        from stts.checkpoint import save_checkpoint
        from stts.registry import checkpoint_meta

        if not accelerator.is_main_process:
            return
        bare = accelerator.unwrap_model(model)
        meta = checkpoint_meta(
            bare,
            classes=self.classes,
            recipe=self.cfg.recipe,
            epoch=self.state.epoch,
            iteration=self.state.iteration,
            train_config=self.cfg.to_dict(),
            **extra,
        )
        save_checkpoint(path, bare, meta=meta)

    def _resume(self, accelerator, optimizer) -> bool:
        point = find_resume_point(self.out)
        if point is None or self._resume_request is False:
            if self._resume_request and point is None and accelerator.is_main_process:
                self._say(f"nothing to resume in {self.out}: starting a new run")
            return False
        saved = self.out / "config.yaml"
        if saved.is_file():
            try:
                before = load_config(saved)
            except (ConfigError, OSError) as err:
                raise TrainError(
                    f"{saved} cannot be resumed by this version of stts ({err}); give another --out"
                ) from None
            _check_resumable(before, self.cfg, self.out, accelerator.device)
        # a saved optimizer state brings its param groups' settings along, implementation flags included
        # (checkpoints of 0.1 say fused=None): keep this run's
        impl = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
        accelerator.load_state(str(point))
        for group, flags in zip(optimizer.param_groups, impl, strict=True):
            group.update(flags)
        data = json.loads((point / STATE_FILE).read_text())
        # counters added by later versions start from their defaults
        self.state = TrainState(**{k: data[k] for k in TrainState.__dataclass_fields__ if k in data})
        self._say(f"resumed from {point.name} (epoch {self.state.epoch}, iteration {self.state.epoch_iter})")
        return True

    def _summary(self, run: TrainRun, iters: int) -> str:
        """One line at the start: what trains from what, for how long, and what its files will weigh (a
        checkpoint holds the weights and AdamW's two moments: three times model.pt)."""
        cfg = self.cfg
        params = sum(p.numel() for p in run.bare.parameters())
        weights = sum(p.numel() * p.element_size() for p in run.bare.parameters())
        start = f"from {cfg.model.init}" if cfg.model.init else "from random weights (no --init)"
        frozen = cfg.optim.frozen_backbone_epochs
        if cfg.optim.lr_schedule in ("two_rate", "mvit") and frozen > 0:
            start += f", backbone frozen for {frozen:g} epochs"
        every = cfg.checkpoint.checkpoint_minutes
        cadence = "at epoch ends" + (f", every {every:g} min" if every else "")
        if cfg.checkpoint.checkpoint_every:
            cadence += f", every {cfg.checkpoint.checkpoint_every} steps"
        return (
            f"train {cfg.model.name} ({params / 1e6:.2f} M parameters) {start}; "
            f"{cfg.training.epochs} epochs × {iters} iterations per process"
            + (f" (stops after {cfg.training.max_steps} steps)" if cfg.training.max_steps else "")
            + "; files: model.pt "
            f"≈ {_mb(weights)}, a checkpoint ≈ {_mb(3 * weights)} ({cadence}, last {cfg.checkpoint.keep_last} "
            f"kept) in {self.out}"
        )

    # ---- output
    def _say(self, text: str) -> None:
        if self._main:
            if self.console is not None:
                self.console.print(text, highlight=False)
            else:
                print(text, flush=True)

    def _log(self, record: dict) -> None:
        if not self._main:
            return
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    # ---- setup of one run
    def _setup(self) -> TrainRun:
        """Accelerator, model, loaders, optimizer, mixup; the resume point restored; config.yaml written."""
        from stts.runtime import allow_tf32, resolve_precision

        cfg = self.cfg
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
        self.precision = resolve_precision(cfg.system.mixed_precision, _launch_device())
        accelerator = self._accelerator()
        self._main = accelerator.is_main_process
        if accelerator.device.type == "cuda":
            allow_tf32(cfg.system.tf32)
        torch.manual_seed(cfg.training.seed + accelerator.process_index)
        model = self._build_model()
        loader, val_loader = self._loaders(
            model, accelerator.process_index, accelerator.num_processes, accelerator.device
        )
        iters = len(loader)
        optimizer = _adamw(param_groups(model, cfg), cfg, fused=not cfg.uses_deepspeed)
        if cfg.system.compile:
            model.compile()  # in place: parameter names (checkpoints) stay as they are
        model, optimizer = accelerator.prepare(model, optimizer)
        deferred = not cfg.uses_deepspeed and supports_deferred_skip(optimizer, self.precision)
        guard = NonFiniteGuard(accelerator.device, cfg.training.max_bad_steps, deferred=deferred)
        mixup = None
        if cfg.loss.mixup:
            from pipelines.mixup import MVIT_MIXUP, MixUp

            mixup = MixUp(
                replace(MVIT_MIXUP, num_classes=len(self.classes), label_smoothing=cfg.loss.label_smoothing)
            )
        total_steps = math.ceil(iters * cfg.training.epochs / cfg.training.grad_accum)
        if cfg.training.max_steps is not None:
            total_steps = min(total_steps, cfg.training.max_steps)
        run = TrainRun(
            cfg=cfg,
            accelerator=accelerator,
            model=model,
            bare=accelerator.unwrap_model(model),
            optimizer=optimizer,
            guard=guard,
            precision=self.precision,
            mixup=mixup,
            loader=loader,
            val_loader=val_loader,
            schedule=Schedule(cfg, iters),
            total_steps=total_steps,
            window=WindowMeter(accelerator.device),
        )
        resumed = self._resume(accelerator, optimizer)
        self._say(self._summary(run, iters))
        if self._main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            if not resumed:
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if cfg.logging.tensorboard:
            accelerator.init_trackers("tensorboard")
        self._log({"event": "resume" if resumed else "start", "iteration": self.state.iteration})
        accelerator.wait_for_everyone()
        if self._main and self.progress_mode != "none":
            run.display = _Display(self, total_steps, self.progress_mode)
        if cfg.logging.rank_logs:
            run.keys_file = open(self.out / f"rank{accelerator.process_index}.jsonl", "a")  # noqa: SIM115
        return run

    # ---- the loop
    def fit(self) -> TrainResult:
        previous = self._catch_stop_signals()
        try:
            return self._fit()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _fit(self) -> TrainResult:
        run = self._setup()
        self._last_save = time.monotonic()
        stopped = None
        try:
            if run.display:
                run.display.start()
            while self.state.epoch < self.cfg.training.epochs and stopped is None:
                stopped = self._epoch(run)
                if stopped is None and _any_rank(run.accelerator, self._stop_signal is not None)[0]:
                    stopped = self._interrupted(run)  # the epoch's end wrote the checkpoint
            if run.keys_file:
                checksum = sum(float(p.detach().double().sum()) for p in run.bare.parameters())
                run.keys_file.write(json.dumps({"event": "end", "checksum": checksum}) + "\n")
        finally:
            if run.display:
                run.display.stop()
            if run.keys_file:
                run.keys_file.close()
        return self._finish(run, stopped)

    def _epoch(self, run: TrainRun) -> str | None:
        """One epoch from the saved position; a reason to stop (``"nonfinite"``, ``"max_steps"``,
        ``"interrupted"``) or None."""
        for batch in self._batches(run):
            self._set_schedule(run)
            self._record_keys(run, batch)
            result = self.train_step(run, batch)
            stop = self._account(run, result, batch)
            if stop is None:
                self._log_window(run)
                stop = self._checkpoint_if_due(run)
            if stop is not None:
                return stop
        if self._stop_signal is not None and self.state.epoch_iter < len(run.loader):
            # the loader stopped early: a signal sent to every process (SIGTERM from a scheduler) ended its
            # decoding workers too. One process at an optimizer step can still save an exact checkpoint; on
            # several, the ranks would disagree on the step, so they stop with the last checkpoint.
            if run.accelerator.num_processes == 1 and run.stepped:
                self._save(run.accelerator, run.model, reason="interrupt")
            return self._interrupted(run)
        return self._end_epoch(run)

    # ---- interruptions
    def _catch_stop_signals(self) -> dict:
        """SIGINT / SIGTERM stop the run after the current optimizer step with a checkpoint (`_on_signal`);
        the handlers they replace are returned (fit restores them). Only the main thread can set them."""
        if not _in_main_thread():
            return {}
        self._pid = os.getpid()
        return {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    def _on_signal(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:  # a forked decoding worker's copy of the trainer: not ours to stop
            return
        if self._stop_signal is not None:
            if signum == signal.SIGINT == self._stop_signal:  # Ctrl-C twice: stop at once, no checkpoint
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            return  # already stopping (e.g. a launcher's SIGTERM after the terminal's SIGINT)
        self._stop_signal = signum
        if getattr(self, "_main", True):
            name = signal.Signals(signum).name
            again = "; Ctrl-C again stops at once, without one" if signum == signal.SIGINT else ""
            sys.stderr.write(f"\n{name}: stopping after this step, with a checkpoint{again}\n")
            sys.stderr.flush()

    def _interrupted(self, run: TrainRun) -> str:
        st = self.state
        point = find_resume_point(self.out)
        name = signal.Signals(self._stop_signal or signal.SIGINT).name
        self._say(
            f"interrupted ({name}) at step {st.optimizer_steps}, epoch {st.epoch} iteration {st.epoch_iter}: "
            f"checkpoint {point}; run the same command to resume"
        )
        return "interrupted"

    # ---- the named steps of an iteration
    def _batches(self, run: TrainRun):
        """The epoch's batches from the saved position (the loader's order and clips are functions of seed
        and epoch, so skipped batches are the same ones); the time spent waiting for each is metered."""
        st = self.state
        run.loader.set_epoch(st.epoch)
        run.model.train()
        batches = iter(run.loader)
        with _sigint_held():  # the first batch starts the decoding workers
            for _ in range(st.epoch_iter):  # replay up to the saved position: same order, same clips
                next(batches)
        run.window.restart(st.optimizer_steps)
        while st.epoch_iter < len(run.loader):
            run.window.wait_begins()
            try:
                with _sigint_held():
                    batch = next(batches)
            except StopIteration:
                return
            except Exception:
                if self._stop_signal is None:
                    raise
                return  # the decoding workers got the stop signal too (see _epoch)
            run.window.wait_ends()
            yield batch

    def _set_schedule(self, run: TrainRun) -> None:
        """σ of every selector (a buffer filled on the device) and every group's lr for this iteration."""
        st = self.state
        run.sigma = run.schedule.sigma(st.iteration)
        for selector in run.bare.selectors():
            selector.sigma = run.sigma
        for group in run.optimizer.param_groups:
            group["lr"] = run.schedule.lr(st.iteration, group)

    def _record_keys(self, run: TrainRun, batch) -> None:
        if run.keys_file is not None:
            record = {"epoch": self.state.epoch, "iteration": self.state.epoch_iter, "keys": list(batch.key)}
            run.keys_file.write(json.dumps(record) + "\n")

    def train_step(self, run: TrainRun, batch) -> StepResult:
        return train_step(run, batch)

    def _account(self, run: TrainRun, result: StepResult, batch) -> str | None:
        """Counters after an iteration. The guard's flags are read (`_settle`) only where a decision needs
        them — a logging window, a checkpoint or ``max_steps`` that the steps taken so far (all assumed
        finite) may have reached, the epoch's end — or at once where it cannot skip on the device."""
        st, cfg = self.state, self.cfg
        st.iteration += 1
        st.epoch_iter += 1
        run.window.step_done(len(batch.key) * run.accelerator.num_processes)
        run.guard.update(st.iteration, result.stepped, result.finite, result.loss)
        run.unsettled_steps += result.stepped
        run.stepped = False  # known once settled
        if run.display:
            run.display.advance(st.optimizer_steps + run.unsettled_steps)
        upper = st.optimizer_steps + run.unsettled_steps  # the optimizer steps if no step was skipped
        every, limit = cfg.checkpoint.checkpoint_every, cfg.training.max_steps
        due = (
            not run.guard.deferred
            or self._log_due(run)
            or (result.stepped and limit is not None and upper >= limit)
            or (result.stepped and every and upper % every == 0)
            # a stop signal on one process: settle now, stop after this step (several processes settle at
            # the same iterations only, so they agree on the step at the next logging window)
            or (self._stop_signal is not None and run.accelerator.num_processes == 1)
        )
        return self._settle(run) if due else None

    def _settle(self, run: TrainRun) -> str | None:
        """Replay the iterations since the last read in order: exact optimizer steps, skipped steps logged,
        ``max_bad_steps`` in a row stop the run (``"nonfinite"``; the device stopped updating there)."""
        st, cfg = self.state, self.cfg
        records, loss_sum, loss_count = run.guard.settle()
        run.window.add_losses(loss_sum, loss_count)
        run.unsettled_steps = 0
        for iteration, stepped, finite in records:
            run.stepped = finite and stepped
            if finite:
                st.bad_steps = 0
                st.optimizer_steps += stepped
                continue
            st.bad_steps += 1
            st.skipped_steps += 1
            self._say(
                f"[yellow]warning:[/] non-finite loss at iteration {iteration}; step skipped "
                f"({st.bad_steps} in a row, stop after {cfg.training.max_bad_steps})"
            )
            self._log({"event": "nonfinite", "iteration": iteration, "in_a_row": st.bad_steps})
            if st.bad_steps >= cfg.training.max_bad_steps:
                # iterations after this one ran on the device without changing anything
                st.epoch_iter -= st.iteration - iteration
                st.iteration = iteration
                self._say(
                    f"[bold red]stopped:[/] {st.bad_steps} non-finite losses in a row at iteration "
                    f"{iteration}; the last good checkpoint is in {self.out / 'checkpoints'} — lower "
                    "the lr (--lr), enable clipping (--set clip_grad=1.0) or use bf16 instead of fp16"
                )
                return "nonfinite"
        return None

    def _log_due(self, run: TrainRun) -> bool:
        st = self.state
        return st.iteration % self.cfg.logging.log_every == 0 or st.epoch_iter == len(run.loader)

    def _log_window(self, run: TrainRun) -> None:
        """Every ``log_every`` iterations and at the epoch's end (settled then): the window's means and rates
        to metrics.jsonl, TensorBoard and the progress line."""
        st = self.state
        if not self._log_due(run):
            return
        record = {
            "event": "train",
            "iteration": st.iteration,
            "step": st.optimizer_steps,
            "epoch": st.epoch + st.epoch_iter / len(run.loader),
            "sigma": run.sigma,
            "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(run.optimizer.param_groups)},
            **run.window.figures(st.optimizer_steps),
        }
        self._log(record)
        if run.display:
            run.display.rates(record)
        run.accelerator.log(
            {
                "train/loss": record["loss"],
                "train/sigma": record["sigma"],
                "train/clips_per_s": record["clips_per_s"] or 0,
                "train/data_wait": record["data_wait"],
            },
            step=st.iteration,
        )
        run.window.restart(st.optimizer_steps)

    def _checkpoint_if_due(self, run: TrainRun) -> str | None:
        """``max_steps`` reached: a checkpoint and stop; every ``checkpoint_every`` optimizer steps inside an
        epoch: a checkpoint (the epoch's end saves anyway). Decided on settled counts only."""
        st, cfg = self.state, self.cfg
        if not run.stepped:  # mid accumulation window: a checkpoint here could not resume exactly
            return None
        if cfg.training.max_steps is not None and st.optimizer_steps >= cfg.training.max_steps:
            self._save(run.accelerator, run.model, reason="max_steps")
            return "max_steps"
        minutes = cfg.checkpoint.checkpoint_minutes
        timed = bool(minutes) and time.monotonic() - self._last_save >= 60 * minutes
        stop, timed = _any_rank(run.accelerator, self._stop_signal is not None, timed)
        if stop:
            self._save(run.accelerator, run.model, reason="interrupt")
            return self._interrupted(run)
        every = cfg.checkpoint.checkpoint_every
        if st.epoch_iter < len(run.loader):  # the epoch end saves anyway
            if every and st.optimizer_steps % every == 0:
                self._save(run.accelerator, run.model, reason="every")
            elif timed:
                self._save(run.accelerator, run.model, reason="time")
        return None

    def _end_epoch(self, run: TrainRun) -> str | None:
        """Validate (when due), then model.pt and a checkpoint (after validation: its RNG use is replayed
        on resume too)."""
        st, cfg, accelerator = self.state, self.cfg, run.accelerator
        if run.guard.pending:  # a loader that ended early: its last flags are not read yet
            stop = self._settle(run)
            if stop is not None:
                return stop
        last = st.epoch + 1 == cfg.training.epochs
        due = run.val_loader is not None and ((st.epoch + 1) % cfg.eval.eval_every == 0 or last)
        st.epoch += 1
        st.epoch_iter = 0
        extra: dict[str, Any] = {}
        if due:
            with _sigint_held():  # its decoding workers too; a Ctrl-C here stops after the validation
                result = self._validate(run.model, run.val_loader)
            run.model.train()
            extra = {"val": result}
            self.history.append({"epoch": st.epoch, **result})
            self._log({"event": "val", "epoch": st.epoch, "iteration": st.iteration, **result})
            accelerator.log(
                {f"val/{k}": v for k, v in result.items() if isinstance(v, float)}, step=st.iteration
            )
            self._say(f"epoch {st.epoch}: val top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%}")
            if st.best_top1 is None or result["top1"] > st.best_top1:
                st.best_top1 = result["top1"]
                self._save_model(accelerator, run.model, self.out / "best.pt", val=result)
        self._save_model(accelerator, run.model, self.out / "model.pt", **extra)
        self._save(accelerator, run.model, reason="epoch")
        return None

    def _finish(self, run: TrainRun, stopped: str | None) -> TrainResult:
        accelerator = run.accelerator
        accelerator.wait_for_everyone()
        if stopped is None or stopped == "max_steps":
            self._save_model(accelerator, run.model, self.out / "model.pt")
        self._log({"event": "end", "iteration": self.state.iteration, "stopped": stopped})
        accelerator.wait_for_everyone()
        # last: Accelerate's end_training closes the trackers and then destroys the process group, so no
        # collective (wait_for_everyone) may follow it
        accelerator.end_training()
        return TrainResult(
            out=self.out,
            state=self.state,
            history=self.history,
            stopped=stopped,
            main_process=self._main,
            signal=self._stop_signal if stopped == "interrupted" else None,
        )

    def _validate(self, model, loader) -> dict:
        from stts.evaluate import evaluate

        bare = model
        while hasattr(bare, "module"):
            bare = bare.module
        result = evaluate(
            bare,
            loader,
            classes=self.classes,
            recipe_aggregation=self.cfg.recipe,
            count_flops=False,
            selection_metrics=False,
            precision=self.precision,
            seed=self.cfg.training.seed,
        )
        return {
            "top1": float(result.top1),
            "top5": float(result.top5),
            "mean_class_acc": float(result.mean_class_accuracy),
        }


class _Display:
    """Progress on the main process (`stts.progress.ProgressLog`: a live bar on a terminal, plain lines in a
    log): optimizer steps, epoch, loss, lr, σ, step/s, clips/s, share of time waiting for data, ETA. A line
    is printed with each ``metrics.jsonl`` record (every ``log_every`` iterations) and at least every
    30 seconds."""

    def __init__(self, trainer: Trainer, total_steps: int, mode: str):
        from stts.progress import ProgressLog

        self.log = ProgressLog("train", total_steps, console=trainer.console, mode=mode, unit="steps")
        self.rate = ""

    def start(self) -> None:
        self.log.start()

    def stop(self) -> None:
        self.log.stop()

    def rates(self, record: dict) -> None:
        """A metrics record (the only place the host reads the loss: no sync per step): new rates, and a
        line (lines mode) with the window's mean loss."""
        loss = "—" if record.get("loss") is None else f"{record['loss']:.3f}"
        lr = max(record["lr"].values()) if record.get("lr") else 0.0
        cps = record.get("clips_per_s") or 0.0
        rate = f"{record.get('steps_per_s') or 0.0:.2f} step/s, {cps:.1f} clips/s, data wait {record['data_wait']:.0%}"
        info = f"ep {record['epoch']:.2f} loss {loss} lr {lr:.2e} σ {record['sigma']:.3f} {rate}"
        self.log.update(record["step"], info, line=True)

    def advance(self, steps: int) -> None:
        self.log.update(steps)


def train(
    cfg: TrainConfig, *, resume: bool | None = None, console=None, progress: bool | str = True
) -> TrainResult:
    """Train ``cfg`` (see `Trainer`); ``resume=None`` resumes when ``cfg.checkpoint.out`` holds a checkpoint.
    ``progress``: True (a live bar on a terminal, plain lines otherwise), False, or a mode of
    `stts.progress.MODES`."""
    return Trainer(cfg, resume=resume, console=console, progress=progress).fit()
