"""The training engine: one `train(cfg)` for one CPU process, many GPUs and many nodes (Accelerate), with
DeepSpeed ZeRO-1/2 as an option.

Every process builds its own loader over its own slice of the shards (`pipelines.build_loader` with
``rank``/``world_size``): nothing is dispatched from rank 0. The loop (`Trainer.fit`) is short; one
iteration is `Trainer.train_step`. What holds after each stage of an iteration:

1. batch: ``batch_size · num_sample`` clips on the device, normalised, (B, 3, T, H, W);
2. σ and every group's lr set for this iteration (`stts.engine.optim.Schedule`);
3. mixup/cutmix (MViT recipe) → soft targets; forward; loss;
4. a non-finite loss on any rank skips the iteration on every rank (gradients of the accumulation window
   dropped), ``max_bad_steps`` in a row stop the run with the last good checkpoint intact;
5. backward through `accelerator.accumulate` (loss / grad_accum; DDP sync and the optimizer step only at
   the window's last iteration), clipping by global norm, optimizer step.

Checkpoints (``RUN/checkpoints/step-XXXXXXXX/``: Accelerate's state — model, optimizer, grad scaler, every
rank's RNG — plus ``trainer_state.json``: iteration, epoch, position in the epoch, best top-1) are written
to a temporary name and renamed, every ``checkpoint_every`` optimizer steps and at each epoch end; the last
``keep_last`` are kept. ``RUN/model.pt`` (our format, with model name, config and class names) is
rewritten at each epoch end, ``RUN/best.pt`` when validation top-1 improves. Resuming (``resume=True`` or
the same ``out`` again) restores all of it and replays the epoch's loader up to the saved position (the
loader's order and clips are functions of seed and epoch), so a killed and resumed run ends with the
weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import TrainConfig, load_config, save_config
from .optim import Schedule, param_groups

__all__ = ["TrainError", "TrainResult", "Trainer", "train", "find_resume_point"]

STATE_FILE = "trainer_state.json"
DEEPSPEED_DIR = Path(__file__).with_name("deepspeed")
# fields that may differ when a run is resumed (they do not change what is computed up to the resume point)
RESUMABLE = {"epochs", "max_steps", "checkpoint_every", "keep_last", "log_every", "num_threads", "decoder"}


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


# ------------------------------------------------------------------------------------------ helpers


def read_classes(data: str | os.PathLike) -> list[str]:
    from shards.format import shard_classes

    if not (Path(data) / "manifest.json").is_file():
        raise TrainError(f"{data}: no manifest.json; build shards first with `stts shard --out {data} ...`")
    try:
        return shard_classes(data)
    except ValueError as err:
        raise TrainError(str(err)) from None


def specs_for(cfg: TrainConfig, model, *, train: bool):
    """The recipe's (ClipSpec, AugmentSpec) fitted to the model's input, with ``cfg.clip`` / ``cfg.aug``;
    validation uses ``cfg.val_views``."""
    from pipelines.recipes import recipe_for_model

    views = None if train else tuple(cfg.val_views)
    return recipe_for_model(model, family=cfg.recipe, views=views, train=train, clip=cfg.clip, aug=cfg.aug)


def find_resume_point(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run (complete: renamed from its temporary name,
    with its trainer state inside)."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _deepspeed_config(cfg: TrainConfig, clips_per_iter: int) -> dict:
    path = Path(cfg.deepspeed) if cfg.deepspeed else DEEPSPEED_DIR / f"zero{cfg.zero}.json"
    if not path.is_file():
        raise TrainError(f"DeepSpeed config {path} not found; give a JSON file or use --zero 1|2")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TrainError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    fill = {
        "train_micro_batch_size_per_gpu": clips_per_iter,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.clip_grad or 0.0,
    }
    for key, value in fill.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    for key, on in (("bf16", cfg.mixed_precision == "bf16"), ("fp16", cfg.mixed_precision == "fp16")):
        section = ds.setdefault(key, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = on
    return ds


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, out: Path) -> None:
    differ = [
        f.name
        for f in saved.__dataclass_fields__.values()
        if f.name not in RESUMABLE and getattr(saved, f.name) != getattr(cfg, f.name)
    ]
    if differ:
        shown = ", ".join(f"{k}: {getattr(saved, k)!r} → {getattr(cfg, k)!r}" for k in differ[:4])
        raise TrainError(
            f"{out} holds a run with other settings ({shown}); resume it with the same options, "
            "or give another --out"
        )


def _sync_flag(accelerator, ok: bool) -> bool:
    """True when ``ok`` holds on every rank."""
    if accelerator.num_processes == 1:
        return ok
    flag = torch.tensor([1.0 if ok else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() == accelerator.num_processes)


# --------------------------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool | None = None, console=None, progress: bool = True):
        if not cfg.data:
            raise TrainError("no data: give --data SHARDS (a folder made by `stts shard`)")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.classes = read_classes(cfg.data)
        self.console = console
        self.show_progress = progress
        self._resume_request = resume
        self.state = TrainState()
        self.history: list[dict] = []

    # ---- setup
    def _accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, ProjectConfiguration

        cfg = self.cfg
        if not torch.distributed.is_initialized():
            # Accelerate keeps process-wide singletons: a second run in the same process (the demo, tests,
            # a notebook) with another precision would be refused. A run is a whole new training, so start
            # from a clean state (private API of the pinned accelerate 1.15; multi-process runs keep theirs).
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        kwargs: dict[str, Any] = {
            "gradient_accumulation_steps": cfg.grad_accum,
            "project_config": ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out)),
            "log_with": "tensorboard" if cfg.tensorboard else None,
        }
        if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # CPU processes talk over gloo (a backend given to a single process would break it)
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        if cfg.uses_deepspeed:
            clips = cfg.batch_size * cfg.num_sample
            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=_deepspeed_config(cfg, clips))
        else:
            kwargs["mixed_precision"] = cfg.mixed_precision
        return Accelerator(**kwargs)

    def _build_model(self):
        from stts.checkpoint import read_checkpoint
        from stts.registry import build_model

        cfg = self.cfg
        try:
            model = build_model(cfg.model, num_classes=len(self.classes), **cfg.model_overrides)
        except ValueError as err:
            raise TrainError(str(err)) from None
        if cfg.init:
            state, _ = read_checkpoint(cfg.init)
            own = model.state_dict()
            keep = {
                k: v
                for k, v in state.items()
                if k in own and v.shape == own[k].shape and "predictor" not in k
            }
            model.load_state_dict(keep, strict=False)
            missing = sorted(k for k in own if k not in keep and "predictor" not in k)
            self.init_report = {"loaded": len(keep), "fresh": missing, "ignored": len(state) - len(keep)}
            backbone_missing = [k for k in missing if not k.startswith(("head", "cls_head"))]
            if backbone_missing:
                raise TrainError(
                    f"--init {cfg.init} does not fit {cfg.model}: {len(backbone_missing)} backbone tensors "
                    f"missing or of other shapes (e.g. {backbone_missing[0]}); is it the right model?"
                )
        return model

    def _loaders(self, model, rank: int, world: int, device):
        from pipelines import build_loader

        cfg = self.cfg
        clip, aug = specs_for(cfg, model, train=True)
        common = {"device": device, "rank": rank, "world_size": world, "decoder": cfg.decoder}
        train = build_loader(
            cfg.data,
            cfg.train_split,
            (clip, aug),
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            train=True,
            num_threads=cfg.num_threads,
            num_sample=cfg.num_sample,
            **common,
        )
        val = None
        if cfg.val_split and cfg.eval_every:
            vclip, vaug = specs_for(cfg, model, train=False)
            val = build_loader(
                cfg.data,
                cfg.val_split,
                (vclip, vaug),
                batch_size=max(1, cfg.batch_size * cfg.num_sample),
                train=False,
                views=tuple(cfg.val_views),
                num_threads=cfg.num_threads,
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
            for old in done[: -self.cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

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

    def _resume(self, accelerator) -> bool:
        point = find_resume_point(self.out)
        if point is None or self._resume_request is False:
            if self._resume_request and point is None and accelerator.is_main_process:
                self._say(f"nothing to resume in {self.out}: starting a new run")
            return False
        saved = self.out / "config.yaml"
        if saved.is_file():
            _check_resumable(load_config(saved), self.cfg, self.out)
        accelerator.load_state(str(point))
        data = json.loads((point / STATE_FILE).read_text())
        self.state = TrainState(**{k: data[k] for k in TrainState.__dataclass_fields__})
        self._say(f"resumed from {point.name} (epoch {self.state.epoch}, iteration {self.state.epoch_iter})")
        return True

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

    # ---- one iteration
    def train_step(self, accelerator, model, optimizer, batch, mixup) -> float | None:
        """Forward, loss, backward and (at the end of an accumulation window) the optimizer step. Returns
        the loss, or None when it was not finite on some rank (the step is skipped everywhere)."""
        cfg = self.cfg
        video, label = batch.video, batch.label
        if cfg.uses_deepspeed and cfg.mixed_precision != "no":
            video = video.to(torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16)
        with accelerator.accumulate(model):
            if mixup is not None:
                video, targets = mixup(video, label)
            with accelerator.autocast() if not cfg.uses_deepspeed else nullcontext():
                logits = model(video)
            if mixup is not None:
                from pipelines.mixup import soft_cross_entropy

                loss = soft_cross_entropy(logits.float(), targets)
            else:
                loss = F.cross_entropy(logits.float(), label, label_smoothing=cfg.label_smoothing)
            if not _sync_flag(accelerator, bool(torch.isfinite(loss).item())):
                optimizer.zero_grad(set_to_none=True)
                return None
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.clip_grad and not cfg.uses_deepspeed:
                accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach().item())

    # ---- the loop
    def fit(self) -> TrainResult:
        cfg = self.cfg
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
        accelerator = self._accelerator()
        self._main = accelerator.is_main_process
        torch.manual_seed(cfg.seed + accelerator.process_index)
        model = self._build_model()
        train_loader, val_loader = self._loaders(
            model, accelerator.process_index, accelerator.num_processes, accelerator.device
        )
        iters = len(train_loader)
        schedule = Schedule(cfg, iters)
        optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        model, optimizer = accelerator.prepare(model, optimizer)
        bare = accelerator.unwrap_model(model)
        mixup = None
        if cfg.mixup:
            from pipelines.mixup import MVIT_MIXUP, MixUp

            mixup = MixUp(
                replace(MVIT_MIXUP, num_classes=len(self.classes), label_smoothing=cfg.label_smoothing)
            )

        resumed = self._resume(accelerator)
        if self._main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            if not resumed:
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if cfg.tensorboard:
            accelerator.init_trackers("tensorboard")
        self._log({"event": "resume" if resumed else "start", "iteration": self.state.iteration})
        accelerator.wait_for_everyone()

        total_steps = math.ceil(iters * cfg.epochs / cfg.grad_accum)
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        stopped = None
        display = _Display(self, total_steps) if self._main and self.show_progress else None
        keys_file = (
            open(self.out / f"rank{accelerator.process_index}.jsonl", "a")  # noqa: SIM115 - closed below
            if cfg.rank_logs
            else None
        )
        try:
            if display:
                display.start()
            while self.state.epoch < cfg.epochs and stopped is None:
                stopped = self._epoch(
                    accelerator,
                    model,
                    bare,
                    optimizer,
                    mixup,
                    train_loader,
                    val_loader,
                    schedule,
                    display,
                    keys_file,
                    total_steps,
                )
            if keys_file:
                checksum = sum(float(p.detach().double().sum()) for p in bare.parameters())
                keys_file.write(json.dumps({"event": "end", "checksum": checksum}) + "\n")
        finally:
            if display:
                display.stop()
            if keys_file:
                keys_file.close()
        accelerator.wait_for_everyone()
        if stopped is None or stopped == "max_steps":
            self._save_model(accelerator, model, self.out / "model.pt")
        self._log({"event": "end", "iteration": self.state.iteration, "stopped": stopped})
        if cfg.tensorboard:
            accelerator.end_training()
        accelerator.wait_for_everyone()
        if accelerator.num_processes > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        return TrainResult(out=self.out, state=self.state, history=self.history, stopped=stopped)

    def _epoch(
        self,
        accelerator,
        model,
        bare,
        optimizer,
        mixup,
        loader,
        val_loader,
        schedule,
        display,
        keys_file,
        total_steps,
    ) -> str | None:
        cfg, st = self.cfg, self.state
        iters = len(loader)
        loader.set_epoch(st.epoch)
        model.train()
        batches = iter(loader)
        for _ in range(st.epoch_iter):  # replay up to the saved position: same order, same clips
            next(batches)
        window_start = time.perf_counter()
        window_steps = st.optimizer_steps
        wait = compute = 0.0
        clips = 0
        losses: list[float] = []
        while st.epoch_iter < iters:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            sigma = schedule.sigma(st.iteration)
            for selector in bare.selectors():
                selector.sigma = sigma
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(st.iteration, group)
            if keys_file is not None:
                record = {"epoch": st.epoch, "iteration": st.epoch_iter, "keys": list(batch.key)}
                keys_file.write(json.dumps(record) + "\n")
            loss = self.train_step(accelerator, model, optimizer, batch, mixup)
            t2 = time.perf_counter()
            wait += t1 - t0
            compute += t2 - t1
            clips += len(batch.key) * accelerator.num_processes
            st.iteration += 1
            st.epoch_iter += 1
            if loss is None:
                st.bad_steps += 1
                st.skipped_steps += 1
                self._say(
                    f"[yellow]warning:[/] non-finite loss at iteration {st.iteration}; step skipped "
                    f"({st.bad_steps} in a row, stop after {cfg.max_bad_steps})"
                )
                self._log({"event": "nonfinite", "iteration": st.iteration, "in_a_row": st.bad_steps})
                if st.bad_steps >= cfg.max_bad_steps:
                    self._say(
                        f"[bold red]stopped:[/] {st.bad_steps} non-finite losses in a row at iteration "
                        f"{st.iteration}; the last good checkpoint is in {self.out / 'checkpoints'} — lower "
                        "the lr (--lr), enable clipping (--set clip_grad=1.0) or use bf16 instead of fp16"
                    )
                    return "nonfinite"
                continue
            st.bad_steps = 0
            losses.append(loss)
            stepped = accelerator.sync_gradients
            if stepped:
                st.optimizer_steps += 1
            if display:
                display.update(st, loss=loss, sigma=sigma, lrs=optimizer.param_groups)
            if st.iteration % cfg.log_every == 0 or st.epoch_iter == iters:
                elapsed = time.perf_counter() - window_start
                record = {
                    "event": "train",
                    "iteration": st.iteration,
                    "step": st.optimizer_steps,
                    "epoch": st.epoch + st.epoch_iter / iters,
                    "loss": sum(losses) / len(losses),
                    "sigma": sigma,
                    "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)},
                    "clips_per_s": clips / elapsed if elapsed > 0 else None,
                    "steps_per_s": (st.optimizer_steps - window_steps) / elapsed if elapsed > 0 else None,
                    "data_wait": wait / (wait + compute) if wait + compute > 0 else 0.0,
                }
                self._log(record)
                if display:
                    display.rates(record)
                accelerator.log(
                    {
                        "train/loss": record["loss"],
                        "train/sigma": sigma,
                        "train/clips_per_s": record["clips_per_s"] or 0,
                        "train/data_wait": record["data_wait"],
                    },
                    step=st.iteration,
                )
                window_start, wait, compute, clips, losses = time.perf_counter(), 0.0, 0.0, 0, []
                window_steps = st.optimizer_steps
            if stepped and cfg.max_steps is not None and st.optimizer_steps >= cfg.max_steps:
                self._save(accelerator, model, reason="max_steps")
                return "max_steps"
            every = cfg.checkpoint_every and st.optimizer_steps % cfg.checkpoint_every == 0
            if stepped and every and st.epoch_iter < iters:  # the epoch end saves anyway
                self._save(accelerator, model, reason="every")
        # epoch end: validate (when due), then checkpoint (after validation: its RNG use is replayed too)
        last = st.epoch + 1 == cfg.epochs
        due = val_loader is not None and ((st.epoch + 1) % cfg.eval_every == 0 or last)
        st.epoch += 1
        st.epoch_iter = 0
        extra: dict[str, Any] = {}
        if due:
            result = self._validate(model, val_loader)
            model.train()
            extra = {"val": result}
            self.history.append({"epoch": st.epoch, **result})
            self._log({"event": "val", "epoch": st.epoch, "iteration": st.iteration, **result})
            accelerator.log(
                {f"val/{k}": v for k, v in result.items() if isinstance(v, float)}, step=st.iteration
            )
            self._say(f"epoch {st.epoch}: val top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%}")
            if st.best_top1 is None or result["top1"] > st.best_top1:
                st.best_top1 = result["top1"]
                self._save_model(accelerator, model, self.out / "best.pt", val=result)
        self._save_model(accelerator, model, self.out / "model.pt", **extra)
        self._save(accelerator, model, reason="epoch")
        return None

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
        )
        return {
            "top1": float(result.top1),
            "top5": float(result.top5),
            "mean_class_acc": float(result.mean_class_accuracy),
        }


class _Display:
    """rich progress on the main process: step/s, clips/s, share of time waiting for data, loss, lr, σ, ETA."""

    def __init__(self, trainer: Trainer, total_steps: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=trainer.console,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, info="")
        self.rate = ""

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def rates(self, record: dict) -> None:
        cps = record.get("clips_per_s") or 0.0
        self.rate = f"{record.get('steps_per_s') or 0.0:.2f} step/s, {cps:.1f} clips/s, data wait {record['data_wait']:.0%}"

    def update(self, st: TrainState, *, loss: float, sigma: float, lrs) -> None:
        lr = max(g["lr"] for g in lrs)
        info = f"ep {st.epoch} loss {loss:.3f} lr {lr:.2e} σ {sigma:.3f} {self.rate}"
        self.progress.update(self.task, completed=st.optimizer_steps, info=info)


def train(
    cfg: TrainConfig, *, resume: bool | None = None, console=None, progress: bool = True
) -> TrainResult:
    """Train ``cfg`` (see `Trainer`); ``resume=None`` resumes when ``cfg.out`` holds a checkpoint."""
    return Trainer(cfg, resume=resume, console=console, progress=progress).fit()
