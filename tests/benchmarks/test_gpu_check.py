"""`make gpu-check` (benchmarks/gpu_check.py) and its offline wheels (benchmarks/gpu_wheels.py): the kit that
measures the GPU goals, kept from rotting on machines without a GPU."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    """A benchmarks/ module (not a package: the scripts import each other by name)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check")
gpu_wheels = _load("gpu_wheels")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _env() -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------------------------------------------ the command


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.skipif(_cuda(), reason="a CUDA device is present: `make gpu-check` would run the whole check")
def test_make_gpu_check_without_cuda_exits_2_with_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("CPU_SMOKE", "WHEELS", "MAKEFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "gpu-check", "WHEELS="], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    ours = [ln for ln in (done.stdout + done.stderr).splitlines() if not ln.startswith("make")]
    assert len(ours) == 1, ours  # make adds its own "make: *** [...] Error 2" line
    assert ours[0].startswith("gpu-check: no CUDA device found") and "CPU_SMOKE=1" in ours[0]


def test_the_orchestrator_starts_on_the_standard_library_alone():
    """It runs before the wheels are installed: nothing but the standard library (and, for the CUDA
    check, torch, imported inside a function) at import time."""
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import gpu_check; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'nvidia', 'av', 'pytest'}))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_module_the_check_cannot_import_stops_it_in_one_line_before_any_step(tmp_path, monkeypatch, capsys):
    # the versions step's interpreter imports what MODULES lists: two here, one of them missing
    monkeypatch.setattr(gpu_check, "MODULES", ["json", "gcfake_not_installed"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main sets it for a smoke run: restored after the test
    argv = ["--cpu-smoke", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    rc = gpu_check.main(argv)
    out, err = capsys.readouterr()
    assert rc == gpu_check.EXIT_SETUP
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(
        "gpu-check: cannot import gcfake_not_installed (ModuleNotFoundError: No module named"
    )
    assert "make gpu-wheels" in err
    assert not (tmp_path / "out").exists()  # no result file for a run that never started


def test_cpu_smoke_runs_every_step_and_writes_the_dated_result(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--cpu-smoke", "--out", str(out), "--work", str(work)]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    [md] = out.glob("*-gpu-*.md")
    [js] = out.glob("*-gpu-*.json")
    assert md.stem == js.stem
    results = json.loads(js.read_text())["results"]
    steps = results["steps"]
    assert [s for s in steps] == ["versions", "tests", "shards", "loader", "train", "inference"]
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys(steps, "ok"), steps
    assert results["mode"] == "cpu-smoke" and results["elapsed_s"] <= took
    assert not steps["versions"]["missing"] and steps["versions"]["torch"]
    kinds = steps["shards"]["kinds"]
    assert set(kinds) == {"raw", "reenc-h264", "reenc-h264-7.5"}
    assert all(k["samples"] == gpu_check.SMOKE.videos and k["codecs"] == {"h264": gpu_check.SMOKE.videos}
               for k in kinds.values()), kinds  # fmt: skip
    rows = steps["loader"]["rows"]
    assert {r["shards"] for r in rows} == set(kinds) and all(r["clips_per_s"] > 0 for r in rows), rows
    assert {r["loader"] for r in rows} == {"ours-pyav", "decode-only pyav"}
    ours = [r for r in rows if r["loader"].startswith("ours-")]
    assert ours and all(r["frames_per_clip"] > 0 for r in ours)  # the loader's own counters
    pairs = steps["train"]["runs"]["mvit_debug"]["results"]["pairs"]
    assert pairs[0]["stts"] == "mvit_debug_t0.5_s0.5" and pairs[0]["stts_s"] > 0
    models = steps["inference"]["runs"][0]["results"]["models"]
    assert set(models) == {"mvit_debug", "mvit_debug_t0.5_s0.5"}
    goals = results["goals"]
    assert len(goals) == 3 and all(g["verdict"].startswith("not ") for g in goals), goals
    # measured, not judged (the smoke run's loader passes are too short to be more than a bound)
    assert "clips/s (ours-pyav," in goals[0]["measured"] and goals[2]["figure"] > 0
    text = md.read_text()
    assert "CPU smoke run" in text and "## Goals" in text and ">= 2,000 clips/s" in text
    for title in ("## Shards", "## Loader", "## Training", "## Inference"):
        assert title in text


# ------------------------------------------------------------------------------------ time and failures


def _check(tmp_path, budget: float, steps) -> tuple:
    info = {"host": "h", "cpu": "c", "cores": 2, "memory_gib": 1, "gpu": None, "python": "3"}
    check = gpu_check.Check(True, budget, tmp_path / "out", tmp_path / "work", _env(), info)
    steps = [gpu_check.Step(n, n, w, fn) for n, w, fn in steps]
    return check, steps, check.run_steps(steps)


def test_a_step_past_its_time_is_stopped_with_its_workers_and_the_next_still_runs(tmp_path):
    pid_file = tmp_path / "grandchild.pid"

    def quick(check, step, timeout):
        gpu_check.need(check.run("quick", check.python("-c", "print('hi')"), timeout), "quick")
        step.data["said"] = "hi"

    def hangs(check, step, timeout):  # a worker process of its own, as DALI and PyAV start
        code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
                f"time.sleep(120)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)")  # fmt: skip
        gpu_check.need(check.run("hangs", check.python("-c", code), timeout), "hangs")

    def fails(check, step, timeout):
        raise RuntimeError("a bug in this step")

    def last(check, step, timeout):
        step.data["ran"] = True

    check, steps, rc = _check(tmp_path, 9, [("quick", 1, quick), ("hangs", 1, hangs), ("fails", 1, fails),
                                            ("last", 1, last)])  # fmt: skip
    assert rc == gpu_check.EXIT_FAILED
    status = {s.name: s.status for s in steps}
    assert status == {"quick": "ok", "hangs": "timeout", "fails": "failed", "last": "ok"}
    hung = steps[1]
    assert hung.seconds < hung.timeout + 8 and "out of time" in hung.error
    stat = Path(f"/proc/{pid_file.read_text()}/stat")  # its worker went with it (gone, or a zombie that
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # PID 1 has not reaped)
    assert "RuntimeError: a bug in this step" in steps[2].error
    written = json.loads(check.base().with_suffix(".json").read_text())["results"]["steps"]
    assert written["quick"]["said"] == "hi" and written["last"]["ran"] is True
    assert written["hangs"]["status"] == "timeout"


def test_steps_share_what_is_left_and_none_starts_once_the_budget_is_spent(tmp_path):
    seen = {}

    def spend(check, step, timeout):
        seen[step.name] = timeout
        time.sleep(max(0.0, check.left()))  # uses up the whole budget

    def never(check, step, timeout):
        seen[step.name] = timeout

    check, steps, rc = _check(tmp_path, 3, [("a", 1, spend), ("b", 2, never)])
    assert seen["a"] == pytest.approx(check.budget / 3, abs=0.3)  # weight 1 of 3
    assert "b" not in seen and steps[1].status == "not run" and steps[1].error == "the budget was spent"
    assert rc == gpu_check.EXIT_FAILED
    md = check.base().with_suffix(".md").read_text()
    assert "| b | not run |" in md


# ---------------------------------------------------------------------------------------------- tests


def test_gpu_tests_step_counts_a_hung_test_and_still_runs_the_others(tmp_path):
    tests = tmp_path / "suite" / "test_fake_gpu.py"
    tests.parent.mkdir()
    (tests.parent / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    tests.write_text(
        "import time\nimport pytest\n\npytestmark = pytest.mark.gpu\n\n\n"
        "def test_passes():\n    pass\n\n\ndef test_hangs():\n    time.sleep(120)\n\n\n"
        "def test_fails():\n    assert 1 == 2, 'one is not two'\n\n\n"
        "def test_skips():\n    pytest.skip('no CUDA here')\n\n\n"
        "@pytest.mark.skip('not a gpu test')\ndef test_unmarked_elsewhere():\n    pass\n\n\n"
        "def test_after_the_hang():\n    pass\n"
    )
    check = gpu_check.Check(True, 120, tmp_path / "out", tmp_path / "work", _env(), {"gpu": None})
    got = gpu_check.run_tests(check, [str(tests)], timeout=90, per_test=3)
    outcome = {k.split("::")[-1]: v["outcome"] for k, v in got["tests"].items()}
    assert outcome == {"test_passes": "passed", "test_hangs": "timeout", "test_fails": "failed",
                       "test_skips": "skipped", "test_unmarked_elsewhere": "skipped",
                       "test_after_the_hang": "passed"}  # fmt: skip
    assert got["runs"] == 2 and got["status"] == "ok"
    by_name = {k.split("::")[-1]: v for k, v in got["tests"].items()}
    assert "one is not two" in by_name["test_fails"]["message"]
    assert "no CUDA here" in by_name["test_skips"]["message"]
    assert "test_hangs" in (check.logs / "pytest-stacks.log").read_text()  # where it hung


def test_only_files_that_mention_the_gpu_marker_are_collected(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "test_one.py").write_text(
        "import pytest\n\n@pytest.mark.gpu\ndef test_x():\n    pass\n"
    )
    (tmp_path / "test_two.py").write_text("def test_y():\n    pass\n")
    (tmp_path / "test_three.py").write_text("import pytest\npytestmark = pytest.mark.gpu\n")
    got = gpu_check.gpu_test_files(tmp_path)
    assert [Path(p).name for p in got] == ["test_one.py", "test_three.py"]


# ---------------------------------------------------------------------------------------------- NVML


class _FakeNvml:
    """pynvml's calls as gpu_check uses them (nvidia-ml-py 13: `nvmlDeviceGetGpuInstanceProfileInfo`
    raises for profiles a GPU lacks)."""

    NVML_GPU_INSTANCE_PROFILE_COUNT = 6

    def __init__(self, profiles: dict):
        self.profiles, self.dec = profiles, iter(range(0, 100, 10))

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle, profile):
        if profile not in self.profiles:
            raise RuntimeError("NVMLError_NotSupported")
        slices, decoders = self.profiles[profile]
        return SimpleNamespace(sliceCount=slices, decoderCount=decoders)


def test_nvdec_engines_are_those_of_the_largest_instance_profile():
    h100 = {0: (1, 1), 1: (2, 1), 2: (3, 2), 3: (4, 2), 4: (7, 7)}  # H100's MIG table (NVDECs per profile)
    assert gpu_check.nvdec_engines(_FakeNvml(h100), None) == {"nvdec_engines": 7}
    got = gpu_check.nvdec_engines(_FakeNvml({}), None)
    assert got["nvdec_engines"] is None and "NVML does not say" in got["nvdec_note"]


def test_nvdec_samples_are_averaged_over_the_rows_timed_windows():
    sampler = gpu_check.NvdecSampler.__new__(gpu_check.NvdecSampler)
    sampler.samples = [(1.0, 10, 50), (2.0, 90, 70), (3.0, 70, 90), (9.0, 0, 0)]
    got = sampler.mean([[1.5, 3.5]])
    assert got == {"nvdec_util": 80.0, "sm_util": 80.0, "samples": 2}
    assert sampler.mean([[4.0, 5.0]]) is None


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_nvml_answers_what_the_check_reads_on_this_gpu():
    """On a GPU machine: NVML gives the driver, the NVDEC engines (or says it cannot) and decoder
    utilisation samples, as gpu_check reads them (nvidia-ml-py's pynvml)."""
    got = gpu_check.nvml_versions()
    assert "error" not in got, got
    assert got["driver"] and got["cuda_driver"] and got["gpus"]
    engines = got["gpus"][0]["nvdec_engines"]
    assert engines is None or engines >= 1
    sampler = gpu_check.NvdecSampler(period=0.05)
    time.sleep(0.5)
    sampler.close()
    assert sampler.samples and all(0 <= s[1] <= 100 and 0 <= s[2] <= 100 for s in sampler.samples)


# --------------------------------------------------------------------------------------------- wheels


def _wheel(folder: Path, name: str, payload: bytes) -> Path:
    """A small pure-Python wheel whose module holds ``payload``'s sha256 and a data file with it."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    digest = hashlib.sha256(payload).hexdigest()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", f"DIGEST = {digest!r}\n")
        z.writestr(f"{name}/payload.bin", payload)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return path


def _wheel_set(tmp_path: Path, part_size: int = 100_000) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    big = _wheel(folder, "gcfake_big", os.urandom(350_000))  # incompressible: the wheel stays > 3 parts
    small = _wheel(folder, "gcfake_small", b"small")
    wheels = [{"name": "gcfake-big", "version": "1.0", "file": big.name},
              {"name": "gcfake-small", "version": "1.0", "file": small.name}]  # fmt: skip
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    gpu_wheels.write_set(folder, wheels, python, 13, part_size)
    return folder


def _imports(target: Path) -> str:
    code = ("import hashlib, importlib.resources as r, gcfake_big, gcfake_small; "
            "data = r.files('gcfake_big').joinpath('payload.bin').read_bytes(); "
            "print(hashlib.sha256(data).hexdigest() == gcfake_big.DIGEST, gcfake_big.__file__)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env={**_env(), "PYTHONPATH": str(target)},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_split_wheel_set_is_joined_checked_and_installed_into_a_private_folder(tmp_path):
    folder = _wheel_set(tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    parts = [n for n in names if ".whl.part-" in n]
    assert parts == [f"gcfake_big-1.0-py3-none-any.whl.part-a{c}" for c in "abcd"]
    assert "gcfake_big-1.0-py3-none-any.whl" not in names  # replaced by its parts
    assert all((folder / p).stat().st_size <= 100_000 for p in parts)
    manifest = json.loads((folder / "wheels.json").read_text())
    assert manifest["cuda"] == 13 and manifest["wheels"][0]["parts"] == parts
    if shutil.which("sha256sum"):  # the list is what coreutils checks
        done = subprocess.run(
            ["sha256sum", "-c", "--ignore-missing", "SHA256SUMS"], cwd=folder, capture_output=True
        )
        assert done.returncode == 0, done.stdout

    target = gpu_wheels.install(folder, tmp_path / "site")
    assert target.parent == tmp_path / "site" and (target / ".installed").is_file()
    out = _imports(target)
    assert out.startswith("True ") and str(target) in out  # joined bytes intact, imported from the target
    assert gpu_wheels.install(folder, tmp_path / "site") == target  # the same set: installed once

    # without pip, the wheels are unpacked the same way
    plain = tmp_path / "plain"
    original = gpu_wheels.has_pip
    gpu_wheels.has_pip = lambda python: False
    try:
        assert _imports(gpu_wheels.install(folder, plain)).startswith("True ")
    finally:
        gpu_wheels.has_pip = original


def test_a_damaged_or_missing_part_and_a_python_mismatch_are_one_line_errors(tmp_path):
    folder = _wheel_set(tmp_path)
    part = folder / "gcfake_big-1.0-py3-none-any.whl.part-ab"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(gpu_wheels.WheelError, match=r"part-ab: sha256 differs .* copy it again"):
        gpu_wheels.install(folder, tmp_path / "a")
    part.unlink()
    with pytest.raises(gpu_wheels.WheelError, match="parts join into other bytes"):
        gpu_wheels.install(folder, tmp_path / "b")
    for p in folder.glob("*.part-*"):
        p.unlink()
    with pytest.raises(gpu_wheels.WheelError, match="gcfake_big-1.0-py3-none-any.whl is missing"):
        gpu_wheels.install(folder, tmp_path / "c")
    manifest = json.loads((folder / "wheels.json").read_text())
    manifest["python"] = "2.7"
    (folder / "wheels.json").write_text(json.dumps(manifest))
    with pytest.raises(
        gpu_wheels.WheelError, match=r"for Python 2.7, this is Python 3\.\d+: run `make gpu-wheels"
    ):
        gpu_wheels.install(folder, tmp_path / "d")
    assert not [p for x in "abcd" for p in (tmp_path / x).glob("site-*")]  # nothing half-installed


def test_the_wheel_set_asks_for_every_project_dependency_but_torch():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for cuda, dali in ((13, "nvidia-dali-cuda130"), (12, "nvidia-dali-cuda120")):
        names = [
            gpu_wheels.canonical(r.split("<")[0].split(">")[0].split("=")[0])
            for r in gpu_wheels.requirements(cuda)
        ]
        for dep in project["dependencies"]:
            name = gpu_wheels.canonical(dep.split("<")[0].split(">")[0].split("=")[0])
            if name.startswith("nvidia-dali"):
                continue
            assert (name in names) != (name in gpu_wheels.LEFT_OUT), name
        assert dali in names and "torch" not in names and {"pytest", "nvidia-ml-py"} <= set(names)
        assert len({n for n in names if n.startswith("nvidia-dali")}) == 1


def test_the_resolver_sees_a_torch_without_dependencies(tmp_path):
    wheel = gpu_wheels.standin_torch(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(f"torch-{gpu_wheels.TORCH_STANDIN}.dist-info/METADATA").decode()
    assert "Requires-Dist" not in meta and f"Version: {gpu_wheels.TORCH_STANDIN}" in meta
    assert gpu_wheels.TORCH_STANDIN.startswith("2.11")  # the oldest torch the GPU path supports


def test_the_installed_nvidia_package_still_imports_the_machines_nvidia_modules(tmp_path):
    """DALI's codec wheels ship an ``nvidia/__init__.py`` and so do the CUDA wheels under the machine's
    torch: the private folder, first on the path, must not hide the machine's ``nvidia.*``."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    path = folder / "gcfake_codec-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("nvidia/__init__.py", "")
        z.writestr("nvidia/gcfake_codec/__init__.py", "WHERE = 'private'\n")
        z.writestr(
            "gcfake_codec-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: gcfake-codec\nVersion: 1.0\n"
        )
        z.writestr(
            "gcfake_codec-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr("gcfake_codec-1.0.dist-info/RECORD", "")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    gpu_wheels.write_set(
        folder, [{"name": "gcfake-codec", "version": "1.0", "file": path.name}], python, 13, 10**6
    )
    target = gpu_wheels.install(folder, tmp_path / "site")
    machine = tmp_path / "machine"
    (machine / "nvidia" / "gcfake_cublas").mkdir(parents=True)
    (machine / "nvidia" / "__init__.py").write_text("")  # a regular package, as some CUDA wheels make it
    (machine / "nvidia" / "gcfake_cublas" / "__init__.py").write_text("WHERE = 'machine'\n")
    code = "import nvidia.gcfake_codec as a, nvidia.gcfake_cublas as b; print(a.WHERE, b.WHERE)"
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(target), str(machine)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["private", "machine"]


def test_a_gpu_run_s_result_puts_each_goal_beside_its_figure(tmp_path):
    """The GPU branches of the result file, from step data shaped as the steps write it on a GPU machine."""
    info = {
        "host": "h",
        "cpu": "Xeon",
        "cores": 16,
        "memory_gib": 128,
        "gpu": "NVIDIA H200",
        "python": "3.12.3",
    }
    check = gpu_check.Check(False, 480, tmp_path / "out", tmp_path / "work", _env(), info)
    steps = [gpu_check.Step(n, t, w, fn) for n, t, w, fn in gpu_check.STEPS]
    check.steps = steps
    for s in steps:
        s.status = "ok"
    data = {s.name: s.data for s in steps}
    data["versions"].update(
        torch="2.11.0+cu130", torch_cuda="13.0", dali="2.4.0", dali_wheel="nvidia-dali-cuda130", av="18.1.0",
        python="3.12.3", gpus=[{"name": "NVIDIA H200", "memory_gib": 139.8, "capability": "9.0", "sms": 132}],
        nvml={"driver": "580.65", "cuda_driver": "13.0", "gpus": [{"name": "NVIDIA H200", "nvdec_engines": 7}]},
    )  # fmt: skip
    data["shards"].update(videos={"count": 64, "seconds": 10.0, "frame": "340x256", "content": "H.264"},
                          kinds={"raw": {"folder": "x", "options": "", "samples": 64, "bytes": 5e7, "codecs": {"h264": 64}}})  # fmt: skip
    row = {"shards": "reenc-h264", "clips": 960, "seconds": 0.4, "frames_per_clip": 31.0, "passes": 2,
           "prefetch_clips": 56, "nvml": {"nvdec_util": 71.0, "sm_util": 40.0, "samples": 9}}  # fmt: skip
    rows = [
        {**row, "loader": "ours-dali-gpu [full]", "clips_per_s": 2400.0},
        {**row, "loader": "ours-dali-gpu [full]", "shards": "raw", "clips_per_s": 900.0},
        # 48 timed clips a pass, 56 made before the clock: its 9,000 clips/s is no measurement
        {**row, "loader": "ours-dali-gpu [full]", "shards": "reenc-h264-7.5", "clips": 96, "clips_per_s": 9000.0},
        {**row, "loader": "decode-only dali-gpu", "clips_per_s": 5000.0, "frames_per_clip": None},
        {**row, "loader": "ours-pyav [full]", "clips_per_s": 300.0, "nvml": None, "prefetch_clips": None},
    ]  # fmt: skip
    for r in rows:  # as step_loader reads them
        r["short"] = gpu_check.short_passes(r)
    data["loader"].update(batch_size=8, workers=16, dtype="bfloat16", row_seconds=7.5, rows=rows)

    # bench_train --device cuda (`gpu_main`): the figures per model in `rows`, `pairs` in the CPU rows' schema
    def run_row(s_per_step, peak, wait):
        return {"model": "m", "clips_per_step": 4, "steps": 20, "s_per_step": s_per_step, "clips_per_s": 4 / s_per_step,
                "data_wait": wait, "data_wait_measured_by": "cuda events", "peak_gpu_mib": peak}  # fmt: skip

    train_rows = {
        "mvit_b_16x4": run_row(0.2, 20000.0, 0.012),
        "mvit_b_16x4_t0.6_s0.9": run_row(0.1, 12000.0, 0.031),
    }
    pair = {"baseline": "mvit_b_16x4", "stts": "mvit_b_16x4_t0.6_s0.9", "zoo": True, "clips": 4, "baseline_s": 0.2,
            "stts_s": 0.1, "speedup": 2.0, "baseline_peak_mib": 20000.0, "stts_peak_mib": 12000.0,
            "baseline_data_wait": {"share": 0.012}, "stts_data_wait": {"share": 0.031}}  # fmt: skip
    data["train"]["shards"] = "reenc-h264"
    data["train"]["runs"] = {"mvit_b_16x4": {"status": "ok", "results": {"device": "cuda", "pairs": [pair],
                                                                         "rows": train_rows}},
                             "swin_b_32x2": {"status": "not run", "error": "20 s left"}}  # fmt: skip
    # bench_inference's seconds are per clip (a batch of 16 timed, divided by 16)
    models = {"mvit_b_16x4": {"gflops": 70.5, "seconds": 0.1 / 16, "speedup": 1.0, "flops_ratio": 1.0, "efficiency": 1.0},
              "mvit_b_16x4_t0.4_s0.6": {"gflops": 20.0, "seconds": 0.04 / 16, "speedup": 2.5, "flops_ratio": 3.5,
                                        "efficiency": 2.5 / 3.5}}  # fmt: skip
    data["inference"]["runs"] = [
        {"args": ["--family", "mvit"], "status": "ok", "results": {"batch": 16, "models": models}}
    ]
    path = check.write()
    assert path.name.endswith("-gpu-nvidia-h200.md")
    goals = {
        g["goal"].split(":")[0].split(" ")[0]: g
        for g in json.loads(path.with_suffix(".json").read_text())["results"]["goals"]
    }
    assert goals["loader"]["figure"] == 2400.0 and goals["loader"]["verdict"] == "met"
    assert "reenc-h264 shards" in goals["loader"]["measured"]
    assert goals["data"]["figure"] == 0.031 and goals["data"]["verdict"] == "met"
    assert goals["inference"]["verdict"] == "missed" and "71%" in goals["inference"]["measured"]
    text = path.read_text()
    assert "| NVIDIA H200 | 139.8 | 9.0 | 132 | 7 |" in text  # NVDEC engines beside the GPU
    assert "| ours-dali-gpu [full] | reenc-h264 | 2,400.0 | 960 | 31.0 | 71 | 40 |  |" in text
    assert (
        "| ours-dali-gpu [full] | reenc-h264-7.5 | 9,000.0 | 96 | 31.0 | 71 | 40 | passes too short: 48 timed"
        in text
    )
    assert (
        "| mvit_b_16x4 → mvit_b_16x4_t0.6_s0.9 | 4 | 0.200 → 0.100 | 20.0 → 40.0 | 2.00x | 20,000 → 12,000 | "
        "1.2% → 3.1% |" in text
    )
    assert "through dali-gpu from the reenc-h264 shards" in text
    assert "| swin_b_32x2 |" in text and "not run: 20 s left" in text
    assert "| mvit_b_16x4_t0.4_s0.6 | 20.0 | 400.0 | 2.50x | 3.50x | 71% |" in text
    assert "CPU smoke" not in text and "**met**" in text and "**missed**" in text


def test_a_loader_goal_on_passes_too_short_is_not_judged(tmp_path):
    """A DALI pipeline makes its prefetch queue's clips before a pass's clock starts: a row whose passes
    time few more than those is an upper bound, shown as one, never judged."""
    check = gpu_check.Check(False, 480, tmp_path / "out", tmp_path / "work", _env(), {"gpu": "H200"})
    check.steps = [gpu_check.Step(n, t, w, fn) for n, t, w, fn in gpu_check.STEPS]
    row = {"loader": "ours-dali-gpu [full]", "shards": "raw", "clips": 96, "passes": 2, "prefetch_clips": 56,
           "clips_per_s": 9000.0}  # fmt: skip
    assert "48 timed clips a pass, up to 56" in gpu_check.short_passes(row)
    assert gpu_check.short_passes({**row, "clips": 2 * 224}) is None  # 4x the prefetched clips
    assert gpu_check.short_passes({**row, "prefetch_clips": None}) is None  # the peers: no DALI queue
    check.step("loader").data["rows"] = [{**row, "short": gpu_check.short_passes(row)}]
    goal = gpu_check.goals(check)[0]
    assert goal["figure"] is None and goal["measured"].startswith("at most 9,000 clips/s")
    assert goal["verdict"].startswith("not measured (passes too short")


@pytest.mark.parametrize("smoke", [True, False], ids=["cpu-smoke", "gpu"])
def test_the_commands_the_check_runs_parse_as_each_benchmark_expects(tmp_path, smoke):
    """Every benchmark call of both modes against that benchmark's own argument parser (the flags drifted
    once, when the benchmarks were rewritten beside the check)."""
    check = gpu_check.Check(smoke, 480, tmp_path / "out", tmp_path / "work", _env(), {"gpu": None})
    sz = check.sizes
    shards = {k: tmp_path / k for k in gpu_check.KINDS}
    rows = tmp_path / "rows.json"
    cmd = gpu_check.loader_command(check, shards, 7.5, rows)
    assert cmd[:2] == [sys.executable, str(BENCH / "bench_loader.py")]
    bench_loader = _load("bench_loader")
    args = bench_loader.parser().parse_args(cmd[2:])
    assert args.shards.split(",")[0].partition("=")[0] == "reenc-h264"
    assert args.json == rows and args.row_seconds == 7.5 and args.eval_videos == 0 and args.rounds == 1
    assert args.dtype == sz.dtype and args.aug.split(",") == list(sz.augs)
    assert set(args.aug.split(",")) <= set(bench_loader.AUGS)
    names = [f"ours-{d}" + ("" if a == "peers" else f" [{a}]") for d in ("pyav", "dali-gpu") for a in sz.augs]
    names += ["decode-only pyav", "decode-only dali-gpu"]
    assert all(any(w in n for n in names) for w in args.only.split(","))  # each picks a row
    assert sz.goal_loader in names
    assert gpu_check.loader_rows_per_kind(sz) == len(sz.loaders)  # one augmentation: a row per loader

    train = gpu_check.train_command(
        check, sz.train_pairs[0], None if smoke else tmp_path / "reenc-h264", tmp_path
    )
    args = _load("bench_train").parser().parse_args(train[2:])
    assert args.pairs == sz.train_pairs[0] and args.out == tmp_path
    if smoke:
        assert args.device == "cpu" and args.quick and args.loader_steps == 0
    else:  # `gpu_main`: `stts train` per model, bf16, fed by dali-gpu from the check's shards
        assert args.device == "cuda" and args.mixed_precision == "bf16" and args.decoder == "dali-gpu"
        assert args.shards == tmp_path / "reenc-h264" and args.steps + args.warmup <= 32  # one epoch of MViT

    bench_inference = _load("bench_inference")
    for group in sz.inference_groups:
        args = bench_inference.parser().parse_args(gpu_check.inference_command(check, group, tmp_path)[2:])
        assert args.device == ("cpu" if smoke else "cuda") and args.out == tmp_path
        if not smoke:
            assert args.dtype == "bfloat16" and args.batch == 16 and args.family in ("mvit", "swin")
