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

from .config import RESUMABLE, ConfigError, TrainConfig, load_config, save_config
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


@dataclass
class StepResult:
    """What `Trainer.train_step` reports: the loss (None: not finite on some rank, the step was skipped
    everywhere) and whether an optimizer step was taken (the end of an accumulation window)."""

    loss: float | None
    stepped: bool


class _Window:
    """The running logging window: clips, the time spent waiting for batches and the time of the iterations'
    own work (schedule, step, bookkeeping; not logging or checkpoints), losses."""

    def __init__(self) -> None:
        self.restart(None)

    def restart(self, st: TrainState | None) -> None:
        self.start = time.perf_counter()
        self.steps_at_start = st.optimizer_steps if st is not None else 0
        self.wait = self.compute = 0.0
        self.clips = 0
        self.losses: list[float] = []
        self._mark = self.start

    def wait_begins(self) -> None:
        self._mark = time.perf_counter()

    def wait_ends(self) -> None:
        now = time.perf_counter()
        self.wait += now - self._mark
        self._mark = now

    def step_done(self, clips: int) -> None:
        self.compute += time.perf_counter() - self._mark
        self.clips += clips

    def record(self, st: TrainState, run: TrainRun) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.start
        busy = self.wait + self.compute
        return {
            "event": "train",
            "iteration": st.iteration,
            "step": st.optimizer_steps,
            "epoch": st.epoch + st.epoch_iter / len(run.loader),
            "loss": sum(self.losses) / len(self.losses) if self.losses else None,
            "sigma": run.sigma,
            "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(run.optimizer.param_groups)},
            "clips_per_s": self.clips / elapsed if elapsed > 0 else None,
            "steps_per_s": (st.optimizer_steps - self.steps_at_start) / elapsed if elapsed > 0 else None,
            "data_wait": self.wait / busy if busy > 0 else 0.0,
        }


@dataclass
class TrainRun:
    """What one run holds while it trains (built by `Trainer._setup`; `Trainer.train_step` reads ``cfg``,
    ``accelerator``, ``model``, ``optimizer`` and ``mixup``, so a benchmark can build one without a loader)."""

    cfg: TrainConfig
    accelerator: Any
    model: Any  # as prepared by Accelerate (DDP-wrapped under several processes)
    optimizer: Any
    mixup: Any = None
    bare: Any = None  # the model itself
    loader: Any = None
    val_loader: Any = None
    schedule: Schedule | None = None
    total_steps: int = 0
    display: Any = None
    keys_file: Any = None
    window: _Window = field(default_factory=_Window)
    sigma: float = 0.0  # this iteration's
    stepped: bool = False  # whether this iteration took an optimizer step


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


def _deepspeed_config(cfg: TrainConfig, clips_per_iter: int) -> dict:
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
    for key, on in (
        ("bf16", cfg.system.mixed_precision == "bf16"),
        ("fp16", cfg.system.mixed_precision == "fp16"),
    ):
        section = ds.setdefault(key, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = on
    return ds


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    """Dotted key → value of everything that decides the computation (``clip`` and ``aug`` as wholes)."""
    out: dict[str, Any] = {}
    for section, values in cfg.resolved().items():
        if section in ("clip", "aug"):
            out[section] = values
        else:
            out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, out: Path) -> None:
    a, b = _settings(saved), _settings(cfg)
    differ = [k for k in a if k not in RESUMABLE and a[k] != b.get(k)]
    if differ:
        shown = ", ".join(f"{k}: {a[k]!r} → {b.get(k)!r}" for k in differ[:4])
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


# ------------------------------------------------------------------------------------------ one step


def train_step(run: TrainRun, batch) -> StepResult:
    """Forward, loss, backward and (at the end of an accumulation window) the optimizer step. A loss that
    is not finite on some rank skips the step on every rank (the window's gradients are dropped)."""
    cfg, accelerator, model, optimizer = run.cfg, run.accelerator, run.model, run.optimizer
    video, label = batch.video, batch.label
    if cfg.uses_deepspeed and cfg.system.mixed_precision != "no":
        video = video.to(torch.bfloat16 if cfg.system.mixed_precision == "bf16" else torch.float16)
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
        if not _sync_flag(accelerator, bool(torch.isfinite(loss).item())):
            optimizer.zero_grad(set_to_none=True)
            return StepResult(loss=None, stepped=False)
        accelerator.backward(loss)
        if accelerator.sync_gradients and cfg.optim.clip_grad and not cfg.uses_deepspeed:
            accelerator.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=float(loss.detach().item()), stepped=accelerator.sync_gradients)


# --------------------------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool | None = None, console=None, progress: bool = True):
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
            "gradient_accumulation_steps": cfg.training.grad_accum,
            "project_config": ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out)),
            "log_with": "tensorboard" if cfg.logging.tensorboard else None,
        }
        if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # CPU processes talk over gloo (a backend given to a single process would break it)
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        if cfg.uses_deepspeed:
            clips = cfg.training.batch_size * cfg.training.num_sample
            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=_deepspeed_config(cfg, clips))
        else:
            kwargs["mixed_precision"] = cfg.system.mixed_precision
        return Accelerator(**kwargs)

    def _build_model(self):
        from stts.checkpoint import read_checkpoint
        from stts.registry import build_model, spec_of
        from stts.selection import SELECTOR_KEY

        cfg = self.cfg
        try:
            model = build_model(cfg.model.name, num_classes=len(self.classes), **cfg.model.overrides)
        except ValueError as err:
            raise TrainError(str(err)) from None
        if cfg.model.init:
            spec = spec_of(model)
            state, _ = read_checkpoint(cfg.model.init)
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
            try:
                before = load_config(saved)
            except (ConfigError, OSError) as err:
                raise TrainError(
                    f"{saved} cannot be resumed by this version of stts ({err}); give another --out"
                ) from None
            _check_resumable(before, self.cfg, self.out)
        accelerator.load_state(str(point))
        data = json.loads((point / STATE_FILE).read_text())
        # counters added by later versions start from their defaults
        self.state = TrainState(**{k: data[k] for k in TrainState.__dataclass_fields__ if k in data})
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

    # ---- setup of one run
    def _setup(self) -> TrainRun:
        """Accelerator, model, loaders, optimizer, mixup; the resume point restored; config.yaml written."""
        cfg = self.cfg
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
        accelerator = self._accelerator()
        self._main = accelerator.is_main_process
        torch.manual_seed(cfg.training.seed + accelerator.process_index)
        model = self._build_model()
        loader, val_loader = self._loaders(
            model, accelerator.process_index, accelerator.num_processes, accelerator.device
        )
        iters = len(loader)
        opt = cfg.optim
        optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=opt.lr, betas=opt.betas, eps=opt.eps)
        model, optimizer = accelerator.prepare(model, optimizer)
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
            mixup=mixup,
            loader=loader,
            val_loader=val_loader,
            schedule=Schedule(cfg, iters),
            total_steps=total_steps,
        )
        resumed = self._resume(accelerator)
        if self._main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            if not resumed:
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if cfg.logging.tensorboard:
            accelerator.init_trackers("tensorboard")
        self._log({"event": "resume" if resumed else "start", "iteration": self.state.iteration})
        accelerator.wait_for_everyone()
        if self._main and self.show_progress:
            run.display = _Display(self, total_steps)
        if cfg.logging.rank_logs:
            run.keys_file = open(self.out / f"rank{accelerator.process_index}.jsonl", "a")  # noqa: SIM115
        return run

    # ---- the loop
    def fit(self) -> TrainResult:
        run = self._setup()
        stopped = None
        try:
            if run.display:
                run.display.start()
            while self.state.epoch < self.cfg.training.epochs and stopped is None:
                stopped = self._epoch(run)
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
        """One epoch from the saved position; a reason to stop (``"nonfinite"``, ``"max_steps"``) or None."""
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
        return self._end_epoch(run)

    # ---- the named steps of an iteration
    def _batches(self, run: TrainRun):
        """The epoch's batches from the saved position (the loader's order and clips are functions of seed
        and epoch, so skipped batches are the same ones); the time spent waiting for each is metered."""
        st = self.state
        run.loader.set_epoch(st.epoch)
        run.model.train()
        batches = iter(run.loader)
        for _ in range(st.epoch_iter):  # replay up to the saved position: same order, same clips
            next(batches)
        run.window.restart(st)
        while st.epoch_iter < len(run.loader):
            run.window.wait_begins()
            try:
                batch = next(batches)
            except StopIteration:
                return
            run.window.wait_ends()
            yield batch

    def _set_schedule(self, run: TrainRun) -> None:
        """σ of every selector and every group's lr for this iteration."""
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
        """Counters after an iteration, and the non-finite policy: a skipped step is logged, ``max_bad_steps``
        in a row stop the run (``"nonfinite"``)."""
        st, cfg = self.state, self.cfg
        st.iteration += 1
        st.epoch_iter += 1
        run.window.step_done(len(batch.key) * run.accelerator.num_processes)
        if result.loss is None:
            st.bad_steps += 1
            st.skipped_steps += 1
            self._say(
                f"[yellow]warning:[/] non-finite loss at iteration {st.iteration}; step skipped "
                f"({st.bad_steps} in a row, stop after {cfg.training.max_bad_steps})"
            )
            self._log({"event": "nonfinite", "iteration": st.iteration, "in_a_row": st.bad_steps})
            if st.bad_steps >= cfg.training.max_bad_steps:
                self._say(
                    f"[bold red]stopped:[/] {st.bad_steps} non-finite losses in a row at iteration "
                    f"{st.iteration}; the last good checkpoint is in {self.out / 'checkpoints'} — lower "
                    "the lr (--lr), enable clipping (--set clip_grad=1.0) or use bf16 instead of fp16"
                )
                return "nonfinite"
            run.stepped = False
            return None
        st.bad_steps = 0
        run.window.losses.append(result.loss)
        run.stepped = result.stepped
        if result.stepped:
            st.optimizer_steps += 1
        if run.display:
            run.display.update(st, loss=result.loss, sigma=run.sigma, lrs=run.optimizer.param_groups)
        return None

    def _log_window(self, run: TrainRun) -> None:
        """Every ``log_every`` iterations and at the epoch's end: the window's means and rates to
        metrics.jsonl, TensorBoard and the progress line."""
        st = self.state
        if not (st.iteration % self.cfg.logging.log_every == 0 or st.epoch_iter == len(run.loader)):
            return
        record = run.window.record(st, run)
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
        run.window.restart(st)

    def _checkpoint_if_due(self, run: TrainRun) -> str | None:
        """``max_steps`` reached: a checkpoint and stop; every ``checkpoint_every`` optimizer steps inside an
        epoch: a checkpoint (the epoch's end saves anyway)."""
        st, cfg = self.state, self.cfg
        if not run.stepped:
            return None
        if cfg.training.max_steps is not None and st.optimizer_steps >= cfg.training.max_steps:
            self._save(run.accelerator, run.model, reason="max_steps")
            return "max_steps"
        every = cfg.checkpoint.checkpoint_every
        if every and st.optimizer_steps % every == 0 and st.epoch_iter < len(run.loader):
            self._save(run.accelerator, run.model, reason="every")
        return None

    def _end_epoch(self, run: TrainRun) -> None:
        """Validate (when due), then model.pt and a checkpoint (after validation: its RNG use is replayed
        on resume too)."""
        st, cfg, accelerator = self.state, self.cfg, run.accelerator
        last = st.epoch + 1 == cfg.training.epochs
        due = run.val_loader is not None and ((st.epoch + 1) % cfg.eval.eval_every == 0 or last)
        st.epoch += 1
        st.epoch_iter = 0
        extra: dict[str, Any] = {}
        if due:
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
        if self.cfg.logging.tensorboard:
            accelerator.end_training()
        accelerator.wait_for_everyone()
        if accelerator.num_processes > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        return TrainResult(out=self.out, state=self.state, history=self.history, stopped=stopped)

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
    """Train ``cfg`` (see `Trainer`); ``resume=None`` resumes when ``cfg.checkpoint.out`` holds a checkpoint."""
    return Trainer(cfg, resume=resume, console=console, progress=progress).fit()
