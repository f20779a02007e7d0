"""`make gpu-check`: every GPU goal of the project measured on one CUDA machine, in one command, in ≤ 8 min.

Steps, in this order, each a subprocess with its own share of the budget (``GPU_CHECK_BUDGET`` seconds,
default 480: a step may use ``time left × its weight / the weights of the steps not yet run``, so time a
step does not use goes to the ones after it); a step that fails or runs out of time is recorded and the
next one still runs; the result file is rewritten after every step, so what finished is kept when the
budget (or Ctrl-C) ends the run:

1. versions: GPU name, count, memory, driver, CUDA, torch, DALI, PyAV (FFmpeg), NVDEC engines where NVML
   says; every module the check imports is imported here first (one line names what is missing);
2. GPU tests: ``pytest -m gpu`` over the test files that carry the marker, a deadline per test
   (`gpu_check_pytest`): a test that hangs is counted and the others still run;
3. shards: Kinetics-like videos (64 × 10 s, 340x256, H.264 + AAC, GOP 250, made by
   `bench_shard.make_corpus`), sharded by ``stts shard`` raw and ``--reencode`` (H.264, short side 256,
   GOP 16) at 30 and 7.5 fps;
4. loader: `bench_loader` rows of ``dali-gpu`` and ``pyav``, the full MViT recipe (``ours-X [full]``:
   RandAugment + random erasing, bf16 batches) and ``decode-only X`` (the clip source and decoder alone),
   on the three shard kinds: clips/s, frames decoded per clip (the loader's counters), NVDEC utilisation
   sampled by NVML in this process during each row's timed passes;
5. training: `bench_train --device cuda` (`stts train` itself per model: the recipe's per-process batch
   and augmentation through ``dali-gpu`` from the re-encoded shards, bf16, 10 warm-up and 20 timed
   iterations, one epoch of the 64 videos): s/step, clips/s, data-wait share, peak memory of ``mvit_b_16x4`` vs
   ``mvit_b_16x4_t0.6_s0.9``, then the Swin pair if time is left;
6. inference: `bench_inference` (bf16, batch 16): speed-up against the FLOPs ratio, MViT then Swin.

Result: ``benchmarks/results/{date}-gpu-{gpu}.md`` and ``.json``, each goal beside its figure (loader ≥ 2,000
clips/s of 16x224² on one H100-class GPU; data wait < 5 % training ``mvit_b_16x4_t0.6_s0.9``; inference
speed-up ≥ 80 % of the FLOPs ratio). Logs of every step: ``.cache/gpu-check/logs/``.

Offline machines: ``--wheels DIR`` (``make gpu-check WHEELS=DIR``) installs a folder made by ``make
gpu-wheels`` into a private folder first (`gpu_wheels.install`), put first on the steps' ``PYTHONPATH``;
the machine's torch (≥ 2.11) is used as it is. Without CUDA: exit 2 and one line. ``--cpu-smoke``
(``make gpu-check CPU_SMOKE=1``): the same steps with CPU decoders, debug models and tiny sizes (under a
minute; `make test` runs it); its result goes to ``.cache/gpu-check/results``.

Exit status: 0 every step ran and passed; 1 a step failed, timed out or was not reached; 2 no CUDA
device; 3 the set-up failed (wheels, a missing module, torch older than 2.11).

This file imports only the standard library (and torch, the machine's) before the wheels are installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import common  # noqa: E402 - the benchmarks' result-file naming; standard library only
import gpu_wheels  # noqa: E402

WORK = ROOT / ".cache" / "gpu-check"
MIN_TORCH = (2, 11)
EXIT_FAILED, EXIT_NO_CUDA, EXIT_SETUP = 1, 2, 3
# what the steps import; checked before any step runs (pynvml only with a GPU)
MODULES = ["torch", "numpy", "av", "nvidia.dali", "numba", "accelerate", "typer", "rich", "yaml", "PIL",
           "einops", "tensorboard", "pytest"]  # fmt: skip
LOADER_GOAL, WAIT_GOAL, INFERENCE_GOAL = 2000.0, 0.05, 0.80
WAIT_MODEL = "mvit_b_16x4_t0.6_s0.9"


@dataclass(frozen=True)
class Sizes:
    """What each step does in one mode."""

    videos: int
    seconds: float
    frame: tuple[int, int]
    loaders: tuple[str, ...]  # bench_loader --only, in this order
    augs: tuple[str, ...]  # bench_loader --aug: our loader's rows are "ours-X [aug]"
    goal_loader: str  # the row the loader goal reads
    dtype: str
    loader_batch: int
    loader_warmup: int
    loader_clips: int
    train_pairs: tuple[str, ...]  # by baseline; the first is required, the others if time is left
    train_args: tuple[str, ...]  # bench_train's (the shards of the GPU runs are added)
    inference_args: tuple[str, ...]  # bench_inference's, every run
    inference_groups: tuple[tuple[str, ...], ...]  # bench_inference's per run
    per_test_timeout: float


GPU = Sizes(
    videos=64, seconds=10.0, frame=(340, 256),
    loaders=("ours-dali-gpu", "decode-only dali-gpu", "ours-pyav", "decode-only pyav"), augs=("full",),
    goal_loader="ours-dali-gpu [full]", dtype="bfloat16", loader_batch=8, loader_warmup=2, loader_clips=1_000_000,
    train_pairs=("mvit_b_16x4", "swin_b_32x2"),
    # bench_train's CUDA rows (`gpu_main`): `stts train` per model, fed by the loader. 10 + 20 iterations
    # stay inside one epoch of the 64 videos (MViT's recipe: 2 a step, 32 steps): a new epoch builds a new
    # pipeline, which a real epoch amortises over thousands of steps and 64 videos over none
    train_args=("--device", "cuda", "--steps", "20", "--warmup", "10", "--decoder", "dali-gpu",
                "--mixed-precision", "bf16"),
    inference_args=("--device", "cuda", "--dtype", "bfloat16", "--batch", "16", "--rounds", "10"),
    inference_groups=(("--family", "mvit"), ("--family", "swin")),
    per_test_timeout=120.0,
)  # fmt: skip
SMOKE = Sizes(
    # the peers' augmentation: the recipe's RandAugment compiles its numba kernels first (25 s here)
    videos=4, seconds=2.0, frame=(96, 64), loaders=("ours-pyav", "decode-only pyav"), augs=("peers",),
    goal_loader="ours-pyav", dtype="float32", loader_batch=2, loader_warmup=1, loader_clips=2,
    train_pairs=("mvit_debug",),
    # bench_train's CPU rows (synthetic clips; no data wait: a CPU run of `stts train` per model would
    # take minutes): what the smoke run checks is that the steps run and their results are read
    train_args=("--device", "cpu", "--quick", "--loader-steps", "0"),
    inference_args=("--device", "cpu", "--rounds", "1"),
    inference_groups=(("--models", "mvit_debug,mvit_debug_t0.5_s0.5"),),
    per_test_timeout=60.0,
)  # fmt: skip
KINDS = {  # shard kind → `stts shard` options; the loader measures them in this order
    "reenc-h264": ["--reencode", "--codec", "h264", "--short-side", "256", "--gop", "16"],
    "reenc-h264-7.5": ["--reencode", "--codec", "h264", "--short-side", "256", "--gop", "16", "--fps", "7.5"],
    "raw": [],
}


class SetupError(Exception):
    """Ends the check before any step: one line, exit `EXIT_SETUP`."""


class StepFailed(Exception):
    def __init__(self, message: str, timeout: bool = False):
        super().__init__(message)
        self.timeout = timeout


class Interrupted(BaseException):
    """SIGTERM / SIGINT: the running step is cut short, what finished is written."""


@dataclass
class Step:
    name: str
    title: str
    weight: float
    run: object  # (check, step, timeout) -> None; fills step.data
    status: str = "not run"
    seconds: float = 0.0
    timeout: float = 0.0
    error: str | None = None
    data: dict = field(default_factory=dict)
    floor: float = 0.0  # seconds it gets whatever its weight (while the budget lasts)


@dataclass
class Ran:
    rc: int | None
    timed_out: bool
    seconds: float
    tail: str


# ------------------------------------------------------------------------------------------ the check


class Check:
    def __init__(
        self, smoke: bool, budget: float, out: Path, work: Path, env: dict, info: dict, notes=(), started=None
    ):
        self.smoke, self.budget, self.out, self.work, self.env = smoke, budget, out, work, env
        self.sizes = SMOKE if smoke else GPU
        self.info = info
        self.notes = list(notes)
        self.started = time.monotonic() if started is None else started  # the wheels' install counts too
        self.steps: list[Step] = []
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cores = os.cpu_count() or 1

    # ---- time
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()

    def share(self, step: Step) -> float:
        todo = [s for s in self.steps if s.status == "not run"]
        left = max(0.0, self.left())
        return max(left * step.weight / sum(s.weight for s in todo), min(step.floor, left))

    # ---- subprocesses
    def run(self, log_name: str, cmd: list[str], timeout: float, env: dict | None = None) -> Ran:
        """``cmd`` in its own process group (its workers die with it), output appended to a log."""
        log = self.logs / f"{log_name}.log"
        t0 = time.monotonic()
        with open(log, "ab") as fh:
            fh.write(f"$ {' '.join(cmd)}  (timeout {timeout:.0f} s)\n".encode())
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            timed_out = False
            try:
                proc.wait(timeout=max(timeout, 0.1))
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                if proc.poll() is None:
                    kill_group(proc)
        text = log.read_text(errors="replace")
        return Ran(None if timed_out else proc.returncode, timed_out, time.monotonic() - t0, text[-4000:])

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def loader_workers(self) -> int:
        return 2 if self.smoke else self.cores

    # ---- the run
    def run_steps(self, steps: list[Step]) -> int:
        self.steps = steps
        for step in steps:
            if step.status != "not run":  # done before (the versions step, by main)
                continue
            if self.left() <= 1:
                step.status, step.error = "not run", "the budget was spent"
                continue
            step.timeout = self.share(step)
            t0 = time.monotonic()
            print(f"gpu-check: {step.name} (up to {step.timeout:.0f} s) ...", flush=True)
            try:
                step.run(self, step, step.timeout)
                step.status = "ok"
            except StepFailed as err:
                step.status, step.error = ("timeout" if err.timeout else "failed"), str(err)
            except Interrupted:
                step.status, step.error = "interrupted", "stopped by a signal"
                step.seconds = time.monotonic() - t0
                self.write()
                raise
            except Exception as err:  # noqa: BLE001 - a bug in one step must not lose the others
                step.status, step.error = "failed", f"{type(err).__name__}: {err}".splitlines()[0][:300]
            step.seconds = time.monotonic() - t0
            print(f"gpu-check: {step.name}: {step.status} in {step.seconds:.0f} s"
                  + (f" ({step.error})" if step.error else ""), flush=True)  # fmt: skip
            self.write()
        path = self.write()
        print(f"gpu-check: {path} ({self.elapsed():.0f} s of {self.budget:.0f})", flush=True)
        return 0 if all(s.status == "ok" for s in steps) else EXIT_FAILED

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    # ---- results
    def base(self) -> Path:
        return common.result_base("gpu", self.info, self.out)

    def write(self) -> Path:
        base = self.base()
        base.parent.mkdir(parents=True, exist_ok=True)
        results = {
            "mode": "cpu-smoke" if self.smoke else "gpu", "budget_s": self.budget, "elapsed_s": self.elapsed(),
            "commit": git_commit(), "goals": goals(self),
            "steps": {s.name: {"status": s.status, "seconds": s.seconds, "timeout_s": s.timeout, "error": s.error,
                               **s.data} for s in self.steps},
            "notes": self.notes,
        }  # fmt: skip
        payload = {"benchmark": "gpu", "date": dt.date.today().isoformat(), "machine": self.info,
                   "results": results}  # fmt: skip
        atomic_write(base.with_suffix(".json"), json.dumps(payload, indent=2, default=str) + "\n")
        atomic_write(base.with_suffix(".md"), markdown(self, results))
        return base.with_suffix(".md")


def kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)  # fmt: skip
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)  # fmt: skip
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def last_error(text: str) -> str:
    """The line of a log that says what went wrong (a traceback's last line, else the last line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt|Exit)\b", ln) or ln.startswith("gpu-wheels:"):
            return ln[:300]
    return (lines[-1] if lines else "no output")[:300]


def need(ran: Ran, what: str) -> None:
    if ran.timed_out:
        raise StepFailed(f"{what}: out of time after {ran.seconds:.0f} s", timeout=True)
    if ran.rc != 0:
        raise StepFailed(f"{what}: exit {ran.rc}: {last_error(ran.tail)}")


# ------------------------------------------------------------------------------------------- versions


def collect_versions(modules: list[str]) -> dict:
    """In a step's subprocess (the steps' PYTHONPATH): import every module the check needs, then the
    versions of what matters."""
    import importlib
    import platform

    out: dict = {"python": platform.python_version(), "missing": {}}
    mods = {}
    for name in modules:
        try:
            mods[name] = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any import failure is reported, not raised
            out["missing"][name] = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    for name in ("numpy", "numba", "accelerate", "typer", "pytest"):
        if name in mods:
            out[name] = getattr(mods[name], "__version__", None)
    if "nvidia.dali" in mods:
        out["dali"] = mods["nvidia.dali"].__version__
        from importlib import metadata

        out["dali_wheel"] = next((d.metadata["Name"] for d in metadata.distributions()
                                  if (d.metadata["Name"] or "").startswith("nvidia-dali-cuda")), None)  # fmt: skip
    if "av" in mods:
        out["av"] = mods["av"].__version__
        libs = getattr(mods["av"], "library_versions", {})
        out["ffmpeg_libavcodec"] = ".".join(map(str, libs.get("libavcodec", ()))) or None
    torch = mods.get("torch")
    if torch is not None:
        out["torch"], out["torch_cuda"] = torch.__version__, torch.version.cuda
        out["cuda_available"] = torch.cuda.is_available()
        out["gpus"] = []
        if out["cuda_available"]:
            out["cudnn"] = torch.backends.cudnn.version()
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                    "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                                    "bf16": torch.cuda.is_bf16_supported()})  # fmt: skip
    out["nvml"] = nvml_versions()
    out["machine"] = common.machine()
    return out


def nvml_versions() -> dict:
    """Driver, the driver's CUDA version and NVDEC engines per GPU, as far as NVML answers."""
    try:
        import pynvml
    except ImportError as err:
        return {"error": f"pynvml: {err}"}
    try:
        pynvml.nvmlInit()
    except Exception as err:  # noqa: BLE001 - no driver: said, not raised
        return {"error": f"nvmlInit: {err}"}
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        out = {"driver": _text(pynvml.nvmlSystemGetDriverVersion()), "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}",
               "gpus": []}  # fmt: skip
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out["gpus"].append({"name": _text(pynvml.nvmlDeviceGetName(h)), **nvdec_engines(pynvml, h)})
        return out
    finally:
        pynvml.nvmlShutdown()


def nvdec_engines(pynvml, handle) -> dict:
    """NVDEC engines of the whole GPU: NVML states them per GPU-instance profile (the MIG tables: the
    profile with the most slices is the whole GPU; NVML API reference, ``nvmlGpuInstanceProfileInfo_t``
    ``decoderCount``). GPUs without MIG profiles do not say."""
    best, errors = None, set()
    for profile in range(getattr(pynvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0)):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile)
        except Exception as err:  # noqa: BLE001 - profiles a GPU lacks answer with an error
            errors.add(type(err).__name__)
            continue
        if best is None or info.sliceCount > best[0]:
            best = (info.sliceCount, info.decoderCount)
    if best is None:
        return {
            "nvdec_engines": None,
            "nvdec_note": f"NVML does not say ({', '.join(sorted(errors)) or 'no profiles'})",
        }
    return {"nvdec_engines": best[1]}


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def step_versions(check: Check, step: Step, timeout: float) -> None:
    out = check.work / "versions.json"
    out.unlink(missing_ok=True)
    modules = MODULES + ([] if check.smoke else ["pynvml"])
    ran = check.run("versions", check.python(__file__, "--internal-versions", str(out), *modules), timeout)
    need(ran, "versions")
    data = json.loads(out.read_text())
    step.data.update(data)
    if data["missing"]:
        raise SetupError("cannot import " + ", ".join(f"{m} ({e})" for m, e in data["missing"].items())
                         + ": give the wheels of `make gpu-wheels` (WHEELS=dir) or install them")  # fmt: skip
    if data.get("machine"):
        check.info = data["machine"]
    if not check.smoke and not data.get("cuda_available"):
        raise SetupError("the steps' Python sees no CUDA device (torch.cuda.is_available() is False there)")


# ---------------------------------------------------------------------------------------------- tests


def gpu_test_files(tests: Path) -> list[str]:
    """Test files that mention the gpu marker (``pytest.mark.gpu`` on a test or as ``pytestmark``): only
    they are collected, so that the others' imports neither cost time nor fail the run."""
    return sorted(str(p) for p in tests.rglob("test_*.py") if "mark.gpu" in p.read_text())


def read_journal(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for ln in path.read_text().splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return out


def run_tests(check: Check, files: list[str], timeout: float, per_test: float, log: str = "pytest") -> dict:
    """``pytest -m gpu`` over ``files`` with a deadline per test; after a test hangs, pytest runs again
    without the tests already done."""
    journal, stacks = check.work / f"{log}-journal.jsonl", check.logs / f"{log}-stacks.log"
    journal.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout
    tests: dict[str, dict] = {}
    collect_errors: dict[str, str] = {}
    hung: list[str] = []
    runs, status = 0, "ok"
    env = {**check.env, "GPU_CHECK_TEST_TIMEOUT": str(per_test), "GPU_CHECK_TEST_JOURNAL": str(journal),
           "GPU_CHECK_TEST_STACKS": str(stacks),
           "PYTHONPATH": os.pathsep.join([str(BENCH), check.env.get("PYTHONPATH", "")])}  # fmt: skip
    while True:
        left = deadline - time.monotonic()
        if left < 2:
            status = "out of time"
            break
        skip = [t for t in tests if tests[t].get("done")] + hung
        cmd = check.python("-m", "pytest", "-m", "gpu", "-q", "-p", "gpu_check_pytest", "-p", "no:cacheprovider",
                           "--continue-on-collection-errors", *files, *[f"--deselect={t}" for t in skip])  # fmt: skip
        before = len(read_journal(journal))
        ran = check.run(log, cmd, left, env)
        runs += 1
        records = read_journal(journal)
        open_test = None
        for r in records[before:]:
            if "start" in r:
                open_test = r["start"]
                tests.setdefault(open_test, {"outcome": None})
            elif "report" in r:
                t = tests.setdefault(r["report"], {"outcome": None})
                if r["outcome"] == "failed":
                    t["outcome"] = "error" if r["when"] != "call" else "failed"
                    t["message"] = r.get("message")
                elif r["outcome"] == "skipped" and t["outcome"] is None:
                    t["outcome"], t["message"] = "skipped", r.get("message")
                elif r["when"] == "call" and t["outcome"] is None:
                    t["outcome"] = "passed"
                if "seconds" in r:
                    t["seconds"] = r["seconds"]
                if r["when"] == "teardown":
                    t["done"] = True
                    open_test = None
            elif "collect_error" in r:
                collect_errors[r["collect_error"]] = r.get("message", "")
        finished = any("finish" in r for r in records[before:])
        if ran.timed_out:
            status = "out of time"
            if open_test:
                tests[open_test].update(outcome="not finished", message="the step's time ran out")
            break
        if finished or open_test is None:
            break
        # the deadline ended pytest inside ``open_test``: count it, run the rest again
        tests[open_test].update(outcome="timeout", message=f"longer than {per_test:.0f} s (stacks: {stacks})")
        hung.append(open_test)
    counts = {}
    for t in tests.values():
        t.pop("done", None)
        counts[t["outcome"] or "not finished"] = counts.get(t["outcome"] or "not finished", 0) + 1
    return {"files": files, "per_test_timeout_s": per_test, "runs": runs, "counts": counts, "tests": tests,
            "collect_errors": collect_errors, "status": status}  # fmt: skip


def step_tests(check: Check, step: Step, timeout: float) -> None:
    files = gpu_test_files(ROOT / "tests")
    step.data["files"] = files
    if not files:
        step.data["note"] = "no test file carries the gpu marker"
        return
    per_test = min(check.sizes.per_test_timeout, max(timeout - 5, 1))
    step.data.update(run_tests(check, files, timeout, per_test))
    bad = {k: v for k, v in step.data["counts"].items() if k not in ("passed", "skipped")}
    if step.data["collect_errors"]:
        bad["collection errors"] = len(step.data["collect_errors"])
    if step.data["status"] != "ok":
        counts = ", ".join(f"{v} {k}" for k, v in step.data["counts"].items())
        raise StepFailed(f"GPU tests: out of time ({counts})", timeout=True)
    if bad:
        raise StepFailed("GPU tests: " + ", ".join(f"{v} {k}" for k, v in bad.items()))


# --------------------------------------------------------------------------------------------- shards


def step_shards(check: Check, step: Step, timeout: float) -> None:
    sz = check.sizes
    deadline = time.monotonic() + timeout
    code = (f"import bench_shard; print(bench_shard.make_corpus({sz.videos}, {sz.seconds}, {tuple(sz.frame)}, "
            f"{check.cores}))")  # fmt: skip
    env = {**check.env, "PYTHONPATH": os.pathsep.join([str(BENCH), check.env.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    ran = check.run("shards", check.python("-c", code), timeout, env)
    need(ran, "making the videos")
    corpus = Path(ran.tail.strip().splitlines()[-1])
    step.data["videos"] = {"folder": str(corpus), "count": sz.videos, "seconds": sz.seconds,
                           "frame": f"{sz.frame[0]}x{sz.frame[1]}", "made_in_s": time.monotonic() - t0,
                           "content": "H.264 (x264 ultrafast, GOP 250) + AAC, 30 fps, class folders"}  # fmt: skip
    root = check.work / "shards" / corpus.name
    procs, kinds = {}, {}
    for kind, opts in KINDS.items():
        out = root / kind
        kinds[kind] = {"folder": str(out), "options": " ".join(opts) or "(stored as they are)"}
        if (out / ".complete").is_file():
            kinds[kind]["cached"] = True
            continue
        workers = max(1, check.cores // 2) if opts else 2  # the two re-encodes share the cores
        cmd = check.python("-m", "cli", "shard", "--src", "kinetics400", "--root", str(corpus), "--split", "train",
                           "--out", str(out), "--probe", "fast", "--workers", str(workers), "--overwrite",
                           "--no-fsync", *opts)  # fmt: skip
        log = open(check.logs / f"shards-{kind}.log", "ab")  # noqa: SIM115 - closed below
        procs[kind] = (subprocess.Popen(cmd, cwd=ROOT, env=check.env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True), log, time.monotonic())  # fmt: skip
    errors, timed_out = [], False
    try:
        for kind, (proc, _log, began) in procs.items():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                kill_group(proc)
                errors.append(f"{kind}: out of time")
                timed_out = True
                continue
            kinds[kind]["seconds"] = time.monotonic() - began
            if proc.returncode != 0:
                errors.append(f"{kind}: exit {proc.returncode}: "
                              f"{last_error((check.logs / f'shards-{kind}.log').read_text(errors='replace'))}")  # fmt: skip
            else:
                (root / kind / ".complete").touch()
    finally:
        for proc, log, _ in procs.values():
            if proc.poll() is None:
                kill_group(proc)
            log.close()
    for info in kinds.values():
        manifest = Path(info["folder"]) / "manifest.json"
        if manifest.is_file() and (Path(info["folder"]) / ".complete").is_file():
            split = json.loads(manifest.read_text())["splits"]["train"]
            info.update(samples=split["samples"], bytes=sum(s["bytes"] for s in split["shards"]),
                        codecs=split.get("codecs"), rejected=split.get("rejected"))  # fmt: skip
    step.data["kinds"] = kinds
    if errors:
        raise StepFailed("; ".join(errors), timeout=timed_out)


def shard_dirs(check: Check) -> dict[str, Path]:
    step = check.step("shards")
    kinds = (step.data.get("kinds") or {}) if step else {}
    return {k: Path(v["folder"]) for k, v in kinds.items() if (Path(v["folder"]) / ".complete").is_file()}


# --------------------------------------------------------------------------------------------- loader


class NvdecSampler:
    """NVML's decoder (and SM) utilisation of GPU 0, sampled in a thread; ``mean(windows)`` averages the
    samples taken inside given wall-clock windows."""

    def __init__(self, period: float = 0.2):
        import pynvml

        self.nvml, self.period = pynvml, period
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                dec = self.nvml.nvmlDeviceGetDecoderUtilization(self.handle)[0]
                sm = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
                self.samples.append((time.time(), dec, sm))
            except Exception:  # noqa: BLE001 - a failed sample is left out
                pass
            self.stop.wait(self.period)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.nvml.nvmlShutdown()

    def mean(self, windows: list) -> dict | None:
        inside = [s for s in self.samples if any(a <= s[0] <= b for a, b in windows)]
        if not inside:
            return None
        return {"nvdec_util": sum(s[1] for s in inside) / len(inside), "sm_util": sum(s[2] for s in inside) / len(inside),
                "samples": len(inside)}  # fmt: skip


def loader_command(check: Check, shards: dict[str, Path], row_s: float, rows: Path) -> list[str]:
    """`bench_loader` on the check's shards: one round, no evaluation part, the rows into ``rows``; its
    dated result goes to the work folder (the check's own result has the rows)."""
    sz = check.sizes
    return check.python(
        str(BENCH / "bench_loader.py"), "--shards", ",".join(f"{k}={v}" for k, v in shards.items()),
        "--only", ",".join(sz.loaders), "--aug", ",".join(sz.augs), "--dtype", sz.dtype, "--batch-size",
        str(sz.loader_batch), "--warmup", str(sz.loader_warmup), "--clips", str(sz.loader_clips), "--rounds", "1",
        "--workers", str(check.loader_workers()), "--row-seconds", f"{row_s:.1f}", "--json", str(rows),
        "--eval-videos", "0", "--out", str(check.work / "loader"),
    )  # fmt: skip


def loader_rows_per_kind(sizes: Sizes) -> int:
    """bench_loader's rows per shard kind: ``ours-X`` once per augmentation, any other loader once."""
    return sum(len(sizes.augs) if name.startswith("ours-") else 1 for name in sizes.loaders)


def step_loader(check: Check, step: Step, timeout: float) -> None:
    sz, shards = check.sizes, shard_dirs(check)
    if not shards:
        raise StepFailed("no shards (the shards step failed)")
    rows = check.work / "loader-rows.json"
    rows.unlink(missing_ok=True)
    n_rows = len(shards) * loader_rows_per_kind(sz)
    row_s = max(1.0, (timeout - 30) / n_rows)  # ~30 s: interpreter, imports, the first kernels' compile
    workers = check.loader_workers()
    cmd = loader_command(check, shards, row_s, rows)
    sampler = None
    if not check.smoke:
        try:
            sampler = NvdecSampler()
        except Exception as err:  # noqa: BLE001 - the rows are still worth having
            step.data["nvml"] = f"no NVDEC sampling: {type(err).__name__}: {err}"
    step.data.update(batch_size=sz.loader_batch, workers=workers, dtype=sz.dtype, row_seconds=row_s)
    try:
        ran = check.run("loader", cmd, timeout)
    finally:
        if sampler is not None:
            sampler.close()
        got = json.loads(rows.read_text())["rows"] if rows.is_file() else []
        for r in got:
            r["nvml"] = sampler.mean(r.pop("windows", [])) if sampler else None
            r.pop("windows", None)
            r["short"] = short_passes(r)
        step.data["rows"] = got
    need(ran, "bench_loader")
    failed = [f"{r['loader']} on {r['shards']}: {r['error']}" for r in got if r.get("error")]
    if failed:
        raise StepFailed("; ".join(failed))


PREFETCH_FACTOR = 4  # a pass's timed clips / the clips made before its clock starts, at least


def short_passes(row: dict) -> str | None:
    """Why a row's clips/s may read high, or None: the pipeline may have made ``prefetch_clips`` clips
    before a pass's clock started, and a pass timed fewer than `PREFETCH_FACTOR` times as many (the
    figure is then up to 1 / (1 - 1/4) = 1.33x too high, or more)."""
    pre, passes, clips = row.get("prefetch_clips"), row.get("passes"), row.get("clips")
    if not pre or not passes or not clips or clips / passes >= PREFETCH_FACTOR * pre:
        return None
    return (f"passes too short: {clips / passes:.0f} timed clips a pass, up to {pre} made before its clock "
            f"started (more videos per pass needed)")  # fmt: skip


# ------------------------------------------------------------------------------------- train, inference


def bench_json(folder: Path, name: str) -> dict | None:
    found = sorted(folder.glob(f"*-{name}-*.json"))
    return json.loads(found[-1].read_text())["results"] if found else None


TRAIN_SHARDS = ("reenc-h264", "reenc-h264-7.5", "raw")  # what the GPU training runs read, by preference


def train_command(check: Check, pair: str, shards: Path | None, out: Path) -> list[str]:
    """`bench_train` for one pair (by its baseline); on the GPU `stts train` runs read ``shards``."""
    extra = [] if shards is None else ["--shards", str(shards)]
    return check.python(str(BENCH / "bench_train.py"), "--pairs", pair, *check.sizes.train_args, *extra, "--out",
                        str(out))  # fmt: skip


def step_train(check: Check, step: Step, timeout: float) -> None:
    sz = check.sizes
    deadline = time.monotonic() + timeout
    data_shards = None
    if not check.smoke:  # `stts train` needs shards: without the check's own it would make 128 videos'
        have = shard_dirs(check)
        kind = next((k for k in TRAIN_SHARDS if k in have), None)
        if kind is None:
            raise StepFailed("no shards to train from (the shards step failed)")
        data_shards = have[kind]
        step.data["shards"] = kind
    step.data["runs"] = {}
    for i, pair in enumerate(sz.train_pairs):
        left = deadline - time.monotonic()
        if i and left < 60:  # the optional pairs only with a minute left
            step.data["runs"][pair] = {"status": "not run", "error": f"{left:.0f} s left"}
            continue
        out = check.work / "train" / pair
        for old in out.glob("*"):
            old.unlink()
        ran = check.run(f"train-{pair}", train_command(check, pair, data_shards, out), left)
        got = bench_json(out, "train")
        step.data["runs"][pair] = {"status": "ok" if ran.rc == 0 else "timeout" if ran.timed_out else "failed",
                                   "seconds": ran.seconds, "results": got}  # fmt: skip
        if ran.rc != 0:
            step.data["runs"][pair]["error"] = "out of time" if ran.timed_out else last_error(ran.tail)
            if i == 0:
                need(ran, f"bench_train {pair}")
    if step.data.get("shards", TRAIN_SHARDS[0]) != TRAIN_SHARDS[0]:
        raise StepFailed(f"no {TRAIN_SHARDS[0]} shards: trained from {step.data['shards']}")


def inference_command(check: Check, group: tuple[str, ...], out: Path) -> list[str]:
    return check.python(
        str(BENCH / "bench_inference.py"), *group, *check.sizes.inference_args, "--out", str(out)
    )


def step_inference(check: Check, step: Step, timeout: float) -> None:
    sz = check.sizes
    deadline = time.monotonic() + timeout
    step.data["runs"] = []
    for i, group in enumerate(sz.inference_groups):
        left = deadline - time.monotonic()
        if i and left < 30:
            step.data["runs"].append(
                {"args": list(group), "status": "not run", "error": f"{left:.0f} s left"}
            )
            continue
        out = check.work / "inference" / str(i)
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*"):
            old.unlink()
        ran = check.run(f"inference-{i}", inference_command(check, group, out), left)
        run = {"args": list(group), "status": "ok" if ran.rc == 0 else "timeout" if ran.timed_out else "failed",
               "seconds": ran.seconds, "results": bench_json(out, "inference")}  # fmt: skip
        if ran.rc != 0:
            run["error"] = "out of time" if ran.timed_out else last_error(ran.tail)
        step.data["runs"].append(run)
        if i == 0 and ran.rc != 0:
            need(ran, "bench_inference")


STEPS = [
    # the versions step is also the set-up check (a first import from a fresh folder can be slow): 60 s at least
    ("versions", "Versions", 15, step_versions),
    ("tests", "GPU tests (`pytest -m gpu`)", 90, step_tests),
    ("shards", "Shards", 60, step_shards),
    ("loader", "Loader (`bench_loader`)", 120, step_loader),
    ("train", "Training (`bench_train`)", 120, step_train),
    ("inference", "Inference (`bench_inference`)", 55, step_inference),
]


# ------------------------------------------------------------------------------------------- results


def goals(check: Check) -> list[dict]:
    """Each goal beside its figure, from what the steps measured."""
    judge = not check.smoke
    out = []

    def verdict(ok: bool | None, why: str = "") -> str:
        if ok is None:
            return f"not measured{f' ({why})' if why else ''}"
        if not judge:
            return "not judged (CPU smoke run)"
        return "met" if ok else "missed"

    loader = check.step("loader")
    rows = [r for r in ((loader.data.get("rows") or []) if loader else []) if r.get("clips_per_s")]
    want = [r for r in rows if r["loader"] == check.sizes.goal_loader]
    best = max((r for r in want if not r.get("short")), key=lambda r: r["clips_per_s"], default=None)
    bound = max(want, key=lambda r: r["clips_per_s"], default=None) if best is None else None
    measured = "—"
    if best is not None:
        measured = f"{best['clips_per_s']:,.0f} clips/s ({best['loader']}, {best['shards']} shards)"
    elif bound is not None:
        measured = (
            f"at most {bound['clips_per_s']:,.0f} clips/s ({bound['loader']}, {bound['shards']} shards)"
        )
    out.append({
        "goal": "loader: clips/s of 16x224² (MViT recipe with RandAugment + erasing, dali-gpu, bf16 batches)",
        "target": f">= {LOADER_GOAL:,.0f} clips/s on one H100-class GPU",
        "figure": None if best is None else best["clips_per_s"], "measured": measured,
        "verdict": verdict(None if best is None else best["clips_per_s"] >= LOADER_GOAL,
                           bound["short"] if bound is not None else "no loader row"),
    })  # fmt: skip
    train = check.step("train")
    share, model = None, WAIT_MODEL if judge else "mvit_debug_t0.5_s0.5"
    for run in ((train.data.get("runs") or {}) if train else {}).values():
        for pair in train_pairs(run.get("results")):
            if pair["stts"] == model and pair["stts_wait"] is not None:
                share = pair["stts_wait"]
    out.append({
        "goal": f"data wait training {WAIT_MODEL} (bf16, recipe batch, dali-gpu)",
        "target": f"< {WAIT_GOAL:.0%} of step time", "figure": share,
        "measured": "—" if share is None else f"{share:.1%} ({model})",
        "verdict": verdict(None if share is None else share < WAIT_GOAL,
                           "smoke runs train without the loader" if check.smoke else "no data-wait row"),
    })  # fmt: skip
    inf = check.step("inference")
    models = {}
    for run in (inf.data.get("runs") or []) if inf else []:
        models.update(((run.get("results") or {}).get("models")) or {})
    sel = {n: m for n, m in models.items() if m.get("flops_ratio", 1) > 1}
    worst = min(sel.items(), key=lambda kv: kv[1]["efficiency"], default=None)
    out.append({
        "goal": "inference speed-up against the FLOPs ratio (bf16, batch 16), every STTS model",
        "target": f">= {INFERENCE_GOAL:.0%} of the FLOPs ratio", "figure": None if worst is None else worst[1]["efficiency"],
        "measured": "—" if worst is None else f"lowest {worst[1]['efficiency']:.0%} ({worst[0]}: {worst[1]['speedup']:.2f}x "
                    f"at a FLOPs ratio of {worst[1]['flops_ratio']:.2f}x; {len(sel)} STTS model{'s' * (len(sel) != 1)})",
        "verdict": verdict(None if worst is None else worst[1]["efficiency"] >= INFERENCE_GOAL, "no inference row"),
    })  # fmt: skip
    return out


def train_pairs(results: dict | None) -> list[dict]:
    """bench_train's pairs, each side's s/step, clips/s, peak MiB and data-wait share: from its ``rows``
    where it wrote them (the CUDA rows, `gpu_main`: ``s_per_step``, ``clips_per_s``, ``peak_gpu_mib``,
    ``data_wait``), else from the CPU rows' ``pairs``."""
    rows = (results or {}).get("rows") or {}
    out = []
    for p in (results or {}).get("pairs") or []:
        pair = {"baseline": p["baseline"], "stts": p["stts"], "clips": p["clips"], "speedup": p["speedup"]}
        for side in ("baseline", "stts"):
            r = rows.get(p[side])
            if r is not None:
                pair.update({f"{side}_s": r["s_per_step"], f"{side}_clips_per_s": r["clips_per_s"],
                             f"{side}_peak_mib": r.get("peak_gpu_mib"), f"{side}_wait": r.get("data_wait")})  # fmt: skip
            else:
                wait = p.get(f"{side}_data_wait") or {}
                pair.update({f"{side}_s": p[f"{side}_s"], f"{side}_clips_per_s": p["clips"] / p[f"{side}_s"],
                             f"{side}_peak_mib": p.get(f"{side}_peak_mib"), f"{side}_wait": wait.get("share")})  # fmt: skip
        out.append(pair)
    return out


def _f(x, fmt="{:,.1f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown(check: Check, results: dict) -> str:
    info = check.info
    v = (check.step("versions").data if check.step("versions") else {}) or {}
    gpus = v.get("gpus") or []
    nv = v.get("nvml") or {}
    title = "gpu-check (CPU smoke run: figures mean nothing)" if check.smoke else "gpu-check"
    gpu_line = (
        f"{len(gpus)} × {gpus[0]['name']} ({gpus[0]['memory_gib']} GiB)"
        if gpus
        else f"GPU: {info.get('gpu') or 'none'}"
    )
    lines = [
        f"# {title} — {dt.date.today().isoformat()}", "",
        f"Machine: {gpu_line}; driver {nv.get('driver', '—')} (CUDA {nv.get('cuda_driver', '—')}); torch {v.get('torch', '—')} "
        f"(CUDA {v.get('torch_cuda') or '—'}), DALI {v.get('dali', '—')} ({v.get('dali_wheel') or '—'}), PyAV {v.get('av', '—')} "
        f"(libavcodec {v.get('ffmpeg_libavcodec') or '—'}), Python {v.get('python', '—')}; {info.get('cpu')}, "
        f"{info.get('cores')} cores, {info.get('memory_gib')} GiB.",
        "",
        f"`make gpu-check{' CPU_SMOKE=1' if check.smoke else ''}` at commit `{results['commit'] or 'unknown'}`: "
        f"{results['elapsed_s']:.0f} s of a {results['budget_s']:.0f} s budget.",
        *[f"- {n}" for n in check.notes],
        "", "## Goals", "", "| goal | target | measured | verdict |", "|---|---|---|---|",
        *[f"| {g['goal']} | {g['target']} | {g['measured']} | **{g['verdict']}** |" for g in results["goals"]],
        "", "## Steps", "", "| step | status | seconds | allowed | note |", "|---|---|---:|---:|---|",
        *[f"| {s.title} | {s.status} | {s.seconds:.0f} | {s.timeout:.0f} | {(s.error or '').replace('|', '/')} |" for s in check.steps],
    ]  # fmt: skip
    if gpus:
        lines += [
            "",
            "## Versions",
            "",
            "| GPU | memory GiB | capability | SMs | NVDEC engines |",
            "|---|---:|---|---:|---:|",
        ]
        nv_gpus = nv.get("gpus") or []
        for i, g in enumerate(gpus):
            n = nv_gpus[i] if i < len(nv_gpus) else {}
            lines.append(f"| {g['name']} | {g['memory_gib']} | {g['capability']} | {g['sms']} | "
                         f"{n.get('nvdec_engines') if n.get('nvdec_engines') is not None else n.get('nvdec_note', '—')} |")  # fmt: skip
    t = check.step("tests")
    if t and t.status != "not run":
        c = t.data.get("counts") or {}
        lines += ["", "## GPU tests", "", f"`pytest -m gpu` over {len(t.data.get('files') or [])} files, at most "
                  f"{_f(t.data.get('per_test_timeout_s'), '{:.0f}')} s a test: "
                  + (", ".join(f"{n} {k}" for k, n in sorted(c.items())) or t.data.get("note", "nothing ran")) + "."]  # fmt: skip
        for nodeid, r in (t.data.get("tests") or {}).items():
            if r.get("outcome") not in ("passed", "skipped"):
                lines.append(f"- `{nodeid}`: {r.get('outcome')}: {r.get('message') or ''}")
        for nodeid, msg in (t.data.get("collect_errors") or {}).items():
            lines.append(f"- collection error in `{nodeid}`: {msg}")
    s = check.step("shards")
    if s and s.data.get("kinds"):
        vid = s.data.get("videos") or {}
        lines += ["", "## Shards", "", f"{vid.get('count')} videos of {vid.get('seconds')} s, {vid.get('frame')}, {vid.get('content')}; "
                  "`stts shard --probe fast`:", "", "| kind | options | samples | MB | codecs | seconds |", "|---|---|---:|---:|---|---:|"]  # fmt: skip
        for kind, k in s.data["kinds"].items():
            mb = _f(k["bytes"] / 1e6) if k.get("bytes") else "—"
            secs = "cached" if k.get("cached") else _f(k.get("seconds"), "{:.0f}")
            lines.append(
                f"| {kind} | `{k['options']}` | {k.get('samples', '—')} | {mb} | {', '.join(f'{c} × {n}' for c, n in (k.get('codecs') or {}).items()) or '—'} | {secs} |"
            )
    lo = check.step("loader")
    if lo and lo.data.get("rows"):
        lines += ["", "## Loader", "", f"`bench_loader`, batches of {lo.data['batch_size']} in {lo.data['dtype']}, {lo.data['workers']} "
                  f"DALI threads / PyAV processes (dali-gpu: its per-device settings), at most {lo.data['row_seconds']:.0f} s a "
                  "row; clips/s over the timed part of each pass (the pipeline's build and first batches excluded); [full]: "
                  "`build_loader` with the MViT recipe (RandAugment and random erasing); decode-only: the clip source and "
                  "decoder alone (no augmentation, the same clips); frames decoded per clip: the loader's own counters. "
                  "NVDEC / SM: NVML utilisation of GPU 0 averaged over the row's timed passes.", "",
                  "| loader | shards | clips/s | clips | frames decoded / clip | NVDEC % | SM % | note |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for r in lo.data["rows"]:
            n = r.get("nvml") or {}
            lines.append(f"| {r['loader']} | {r['shards']} | {_f(r.get('clips_per_s'))} | {r.get('clips')} | "
                         f"{_f(r.get('frames_per_clip'))} | {_f(n.get('nvdec_util'), '{:.0f}')} | {_f(n.get('sm_util'), '{:.0f}')} | "
                         f"{r.get('error') or r.get('short') or ''} |")  # fmt: skip
        vid = (check.step("shards").data.get("videos") or {}) if check.step("shards") else {}
        if vid.get("count"):
            per_pass = vid["count"] // lo.data["batch_size"]
            timed = per_pass - check.sizes.loader_warmup
            lines.append(f"\n{vid['count']} videos: a pass (epoch) is {per_pass} batches, {timed} of them timed; a DALI "
                         "pipeline may have made its prefetch queue's runs before the clock starts, so a row whose timed "
                         f"clips a pass are fewer than {PREFETCH_FACTOR}x those is an upper bound (its note says so) and "
                         "no goal is judged on it.")  # fmt: skip
        if lo.data.get("nvml"):
            lines.append(f"\n{lo.data['nvml']}")
    tr = check.step("train")
    if tr and tr.data.get("runs"):
        how = ("`bench_train --device cuda`: `stts train` itself per model (the recipe's per-process batch and augmentation "
               f"through dali-gpu from the {tr.data.get('shards', '—')} shards, bf16), s/step and data wait (CUDA events on "
               "the training stream) over the trainer's logging windows after the warm-up, peak memory over the run"
               if not check.smoke else
               "`bench_train` (CPU rows): s/step over synthetic clips (median), no data wait, no memory probe")  # fmt: skip
        lines += ["", "## Training", "", how + ".", "",
                  "| baseline → STTS | clips/step | s/step | clips/s | speed-up | peak MiB | data wait | note |",
                  "|---|---:|---|---|---:|---|---|---|"]  # fmt: skip
        for name, run in tr.data["runs"].items():
            pairs = train_pairs(run.get("results"))
            if not pairs:
                lines.append(f"| {name} | | | | | | | {run.get('status')}: {run.get('error') or ''} |")
            for p in pairs:
                lines.append(
                    f"| {p['baseline']} → {p['stts']} | {p['clips']} | {p['baseline_s']:.3f} → {p['stts_s']:.3f} | "
                    f"{p['baseline_clips_per_s']:.1f} → {p['stts_clips_per_s']:.1f} | {p['speedup']:.2f}x | "
                    f"{_f(p['baseline_peak_mib'], '{:,.0f}')} → {_f(p['stts_peak_mib'], '{:,.0f}')} | "
                    f"{_f(p['baseline_wait'], '{:.1%}')} → {_f(p['stts_wait'], '{:.1%}')} | "
                    f"{'; '.join((run.get('results') or {}).get('notes') or [])} |"
                )  # fmt: skip
    inf = check.step("inference")
    if inf and inf.data.get("runs"):
        lines += ["", "## Inference", "", "`bench_inference`: median forward time, speed-up over the family's baseline beside "
                  "the FLOPs ratio.", "", "| model | GFLOPs | clips/s | speed-up | FLOPs ratio | speed-up / FLOPs ratio |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for run in inf.data["runs"]:
            res = run.get("results") or {}
            if not res:
                lines.append(
                    f"| {' '.join(run['args'])} | | | | | {run.get('status')}: {run.get('error') or ''} |"
                )
            for n, m in (res.get("models") or {}).items():  # bench_inference's seconds are per clip
                lines.append(f"| {n} | {m['gflops']:.1f} | {1 / m['seconds']:.1f} | {m['speedup']:.2f}x | "
                             f"{m['flops_ratio']:.2f}x | {m['efficiency']:.0%} |")  # fmt: skip
    lines += [
        "",
        f"Logs: `{check.logs.relative_to(ROOT) if check.logs.is_relative_to(ROOT) else check.logs}/`.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main


def torch_ready() -> dict:
    """The machine's torch, before anything else: no CUDA device → `EXIT_NO_CUDA` with one line. (The CPU
    smoke run leaves torch to the versions step, one interpreter start less.)"""
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - any failure to import is the same answer
        raise NoCuda(f"{sys.executable} cannot import torch ({type(err).__name__}: {err}); run with the Python "
                     "that has the machine's CUDA build of torch (GPU_CHECK_PYTHON=...)") from None  # fmt: skip
    version = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if version < MIN_TORCH:
        raise SetupError(f"torch {torch.__version__} is older than {'.'.join(map(str, MIN_TORCH))}, the oldest this "
                         "check supports")  # fmt: skip
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
        raise NoCuda(f"torch {torch.__version__} ({build}) finds no CUDA device; `make gpu-check CPU_SMOKE=1` runs the "
                     "CPU smoke mode")  # fmt: skip
    return {"torch": torch.__version__, "cuda": torch.version.cuda}


class NoCuda(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="CPU decoders, debug models, tiny sizes")
    ap.add_argument("--wheels", type=Path, default=None, help="a folder made by `make gpu-wheels`")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET") or 480),
                    help="seconds for the whole run (default: $GPU_CHECK_BUDGET or 480)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None,
                    help="result folder (default: benchmarks/results; smoke: .cache/gpu-check/results)")  # fmt: skip
    ap.add_argument("--work", type=Path, default=WORK, help="videos, shards, logs, installed wheels")
    ap.add_argument("--internal-versions", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.internal_versions:
        out, *modules = args.internal_versions
        atomic_write(Path(out), json.dumps(collect_versions(modules), default=str))
        return 0

    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if args.cpu_smoke:  # CPU decoders and a CPU device even on a CUDA machine
        os.environ["CUDA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"] = ""
        # one torch thread: on a busy machine OpenMP's threads spin on the busy core (a debug model's
        # forward took 1.3 s with 2 threads, the whole inference step 23 s instead of 11)
        env.setdefault("OMP_NUM_THREADS", "1")
    try:
        if not args.cpu_smoke:  # the one-line answer without CUDA, before anything else
            torch_ready()
        paths, notes = [], []
        if args.wheels:
            t0 = time.monotonic()
            site = gpu_wheels.install(args.wheels, args.work)
            paths.append(str(site))
            sys.path.insert(0, str(site))  # NVML (pynvml) in this process
            notes.append(
                f"packages from the wheels in {args.wheels} (installed into {site}, {time.monotonic() - t0:.0f} s)"
            )
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        # the versions step replaces this with `common.machine()` of the steps' Python
        # (no CUDA call in this process: a context would hold GPU memory for the whole run)
        info = {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "memory_gib": 0, "gpu": None, "python": platform.python_version()}  # fmt: skip
        out = args.out or (args.work / "results" if args.cpu_smoke else common.RESULTS)
        check = Check(args.cpu_smoke, args.budget, out, args.work, env, info, notes, started)
        steps = [
            Step(name, title, weight, fn, floor=60.0 if name == "versions" else 0.0)
            for name, title, weight, fn in STEPS
        ]
        check.steps = steps
        # the versions step doubles as the set-up check: nothing else runs without every module
        first = steps[0]
        first.timeout = check.share(first)
        t0 = time.monotonic()
        step_versions(check, first, first.timeout)
        first.status, first.seconds = "ok", time.monotonic() - t0
    except NoCuda as err:
        print(f"gpu-check: no CUDA device found: {err}", file=sys.stderr)
        return EXIT_NO_CUDA
    except (SetupError, gpu_wheels.WheelError, StepFailed) as err:
        print(f"gpu-check: {err}", file=sys.stderr)
        return EXIT_SETUP

    def stop(signum, frame):
        raise Interrupted()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return check.run_steps(steps)
    except Interrupted:
        print(f"gpu-check: interrupted; what finished is in {check.write()}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
