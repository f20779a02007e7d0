"""Wheels for `make gpu-check` on an offline CUDA machine: made here (`make gpu-wheels`), installed there.

Here, with network (``download``): the project's runtime requirements (``[project].dependencies`` of
pyproject.toml, DALI for the CUDA major asked, pytest, nvidia-ml-py for NVML) are resolved for CPython X.Y
on manylinux x86_64 *with torch taken as installed* (a stand-in torch 2.11 wheel that has no
dependencies: the machine's own CUDA build stays, and nothing that only torch needs is shipped); versions
are pinned to this checkout's ``.venv`` wherever it has the package, so the GPU machine runs what CI ran.
Then exactly those wheels are downloaded (``pip download --no-deps``), every wheel over 60 MB is split
into parts (``split -b 60M``: ``NAME.whl.part-aa``, ``-ab``, ...), and beside them go ``SHA256SUMS`` (every
file, and every wheel the parts join into: ``sha256sum -c --ignore-missing SHA256SUMS`` checks the
files), ``wheels.json`` (Python, CUDA major, each wheel with its parts) and ``requirements.txt``.

Left out, on purpose: torch (the machine's), deepspeed and transformers (ZeRO only; the check trains
without it, and deepspeed publishes no wheels).

There, offline (``install``, standard library only, run by the machine's Python): parts are joined, every
file and joined wheel checked against SHA256SUMS, and the wheels installed with ``pip install --no-index
--no-deps --target`` into a fresh folder named after the checksum list (reused while it is the same), not
over the machine's packages; the caller puts that folder first on ``PYTHONPATH``. Any problem is one line
(`WheelError`) saying what to do.

    python benchmarks/gpu_wheels.py download --python 3.12 --cuda 13 --out gpu-wheels
    python benchmarks/gpu_wheels.py install --wheels gpu-wheels --target .cache/gpu-check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PART_SIZE = 60 * 2**20  # `split -b 60M`
SUMS = "SHA256SUMS"
MANIFEST = "wheels.json"
# the oldest torch this path supports (issue 13); the stand-in that the resolver sees instead of torch
TORCH_STANDIN = "2.11.0+gpucheck"
# glibc 2.28 (RHEL 8, Ubuntu 20.04 and later): every wheel of the set has one of these tags; pip does not
# widen a given --platform to older manylinux tags itself (measured: numba 0.62.1 was not found with
# manylinux_2_28_x86_64 alone)
PLATFORMS = [
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
    "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64",
]  # fmt: skip
LEFT_OUT = {
    "torch": "the machine's own CUDA build is used",
    "deepspeed": "ZeRO only (the check trains without it); no wheels on PyPI",
    "transformers": "needed only by accelerate's DeepSpeed integration",
}
EXTRA = ["nvidia-ml-py"]  # NVML from Python: GPU versions, NVDEC engines and utilisation


class WheelError(Exception):
    """A one-line message: what is wrong and what to do."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- download


def requirements(cuda: int) -> list[str]:
    """What the check needs besides torch, as requirement strings (pyproject's ranges)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = []
    for spec in project["dependencies"]:
        name = canonical(re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0])
        if name in LEFT_OUT:
            continue
        if name == "nvidia-dali-cuda120" and cuda == 13:
            spec = project["optional-dependencies"]["cuda130"][0]
        reqs.append(spec)
    reqs += [s for s in project["optional-dependencies"]["dev"] if canonical(s).startswith("pytest")]
    return reqs + EXTRA


def venv_pins() -> list[str]:
    """``name==version`` of every package of the running environment (this checkout's .venv), torch and
    local versions left out, and the DALI version for both CUDA flavours."""
    from importlib import metadata

    pins = {}
    for dist in metadata.distributions():
        name, version = canonical(dist.metadata["Name"] or ""), dist.version
        if not name or "+" in version or name in LEFT_OUT or name == "stts":
            continue
        pins[name] = version
        if name.startswith("nvidia-dali-cuda"):
            for flavour in ("nvidia-dali-cuda120", "nvidia-dali-cuda130"):
                pins[flavour] = version
    return [f"{n}=={v}" for n, v in sorted(pins.items())]


def standin_torch(folder: Path) -> Path:
    """A wheel named torch at `TORCH_STANDIN` with no dependencies: what the resolver sees of the
    machine's torch."""
    name = f"torch-{TORCH_STANDIN}-py3-none-any.whl"
    info = f"torch-{TORCH_STANDIN}.dist-info"
    path = folder / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {TORCH_STANDIN}\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: gpu_wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return path


def platform_args(python: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python]
    for p in PLATFORMS:
        args += ["--platform", p]
    return args


def resolve(python: str, cuda: int, work: Path) -> list[dict]:
    """The wheels to ship: ``[{name, version, file, sha256}]`` from pip's resolver (a dry run that reads
    metadata only)."""
    (work / "links").mkdir(parents=True, exist_ok=True)
    standin_torch(work / "links")
    (work / "requirements.in").write_text("\n".join(requirements(cuda)) + "\n")
    (work / "constraints.txt").write_text("\n".join([*venv_pins(), f"torch=={TORCH_STANDIN}"]) + "\n")
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        *platform_args(python), "--target", str(work / "target"), "--report", str(work / "report.json"),
        "--find-links", str(work / "links"), "-c", str(work / "constraints.txt"), "-r", str(work / "requirements.in"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        err = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or done.stderr.splitlines()[
            -1:
        ]
        raise WheelError(f"pip could not resolve the wheel set for Python {python}: {' '.join(err)[:400]}")
    wheels = []
    for item in json.loads((work / "report.json").read_text())["install"]:
        name = canonical(item["metadata"]["name"])
        if name == "torch":
            continue
        url = item["download_info"]["url"]
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        wheels.append({"name": name, "version": item["metadata"]["version"], "file": url.rsplit("/", 1)[-1],
                       "sha256": digest})  # fmt: skip
    return sorted(wheels, key=lambda w: w["name"])


def split_file(path: Path, part_size: int) -> list[Path]:
    """``split -b part_size`` into ``NAME.part-aa``, ``-ab``, ...; the original removed."""
    if shutil.which("split"):
        subprocess.run(["split", "-b", str(part_size), "-a", "2", path.name, f"{path.name}.part-"],
                       cwd=path.parent, check=True)  # fmt: skip
    else:  # the same bytes and names without coreutils
        with open(path, "rb") as fh:
            for i, block in enumerate(iter(lambda: fh.read(part_size), b"")):
                suffix = chr(ord("a") + i // 26) + chr(ord("a") + i % 26)
                (path.parent / f"{path.name}.part-{suffix}").write_bytes(block)
    path.unlink()
    return parts_of(path.parent, path.name)


def parts_of(folder: Path, wheel: str) -> list[Path]:
    return sorted(folder.glob(f"{glob_escape(wheel)}.part-*"))


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def write_set(folder: Path, wheels: list[dict], python: str, cuda: int | None, part_size: int) -> None:
    """Split the wheels in ``folder`` over ``part_size`` and write SHA256SUMS, wheels.json and
    requirements.txt beside them."""
    sums = []
    for w in wheels:
        path = folder / w["file"]
        w["sha256"] = sha256_of(path)
        w["size"] = path.stat().st_size
        w["parts"] = []
        sums.append((w["sha256"], w["file"]))
        if w["size"] > part_size:
            for part in split_file(path, part_size):
                w["parts"].append(part.name)
                sums.append((sha256_of(part), part.name))
    (folder / SUMS).write_text("".join(f"{h}  {n}\n" for h, n in sorted(sums, key=lambda x: x[1])))
    manifest = {"python": python, "cuda": cuda, "platforms": PLATFORMS, "part_size": part_size,
                "left_out": LEFT_OUT, "wheels": wheels}  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (folder / "requirements.txt").write_text("".join(f"{w['name']}=={w['version']}\n" for w in wheels))


def download(python: str, cuda: int, out: Path, part_size: int = PART_SIZE) -> dict:
    """Resolve, download, split and list the wheel set into ``out`` (replaced whole at the end)."""
    out = out.resolve()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as work:
        wheels = resolve(python, cuda, Path(work))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *platform_args(python), "-d", str(tmp),
           *[f"{w['name']}=={w['version']}" for w in wheels]]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise WheelError(f"pip download failed: {' '.join(done.stderr.splitlines()[-2:])[:400]}")
    for w in wheels:
        path = tmp / w["file"]
        if not path.is_file():
            raise WheelError(
                f"pip download did not write {w['file']} (got {sorted(p.name for p in tmp.iterdir())})"
            )
        if w["sha256"] and sha256_of(path) != w["sha256"]:
            raise WheelError(f"{w['file']}: sha256 differs from the index's; run make gpu-wheels again")
    write_set(tmp, wheels, python, cuda, part_size)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return json.loads((out / MANIFEST).read_text())


# -------------------------------------------------------------------------------------------- install


def read_sums(folder: Path) -> dict[str, str]:
    path = folder / SUMS
    if not path.is_file():
        raise WheelError(
            f"{folder}: no {SUMS} (a folder made by `make gpu-wheels` has one); copy the whole folder"
        )
    sums = {}
    for ln in path.read_text().splitlines():
        if ln.strip():
            digest, _, name = ln.strip().partition("  ")
            sums[name.lstrip("*")] = digest
    return sums


def check_python(folder: Path) -> None:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    want = json.loads(manifest.read_text()).get("python")
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if want and want != have:
        raise WheelError(f"the wheels in {folder} are for Python {want}, this is Python {have}: run "
                         f"`make gpu-wheels GPU_PYTHON={have}` where there is network and copy that folder")  # fmt: skip


def gather(folder: Path, work: Path) -> list[Path]:
    """Every wheel of the set, checked: whole ones in ``folder``, split ones joined into ``work``."""
    sums = read_sums(folder)
    wheels = []
    for name, digest in sorted(sums.items()):
        if not name.endswith(".whl"):
            continue
        path = folder / name
        if not path.is_file():
            parts = [p for p in parts_of(folder, name) if p.name in sums]
            if not parts:
                raise WheelError(f"{folder}: {name} is missing (neither the wheel nor its parts are there); "
                                 "copy the whole folder again")  # fmt: skip
            for part in parts:
                if sha256_of(part) != sums[part.name]:
                    raise WheelError(
                        f"{part}: sha256 differs from {SUMS}: the copy is damaged, copy it again"
                    )
            path = work / name
            with open(path, "wb") as out:
                for part in parts:
                    with open(part, "rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 20)
            if sha256_of(path) != digest:
                raise WheelError(f"{name}: its {len(parts)} parts join into other bytes than {SUMS} says "
                                 "(a part is missing or extra); copy the parts again")  # fmt: skip
        elif sha256_of(path) != digest:
            raise WheelError(f"{path}: sha256 differs from {SUMS}: the copy is damaged, copy it again")
        wheels.append(path)
    if not wheels:
        raise WheelError(f"{folder}: {SUMS} lists no wheel")
    return wheels


def has_pip(python: str) -> bool:
    return subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0


def unpack_wheel(wheel: Path, target: Path) -> None:
    """What ``pip install --target`` does with a wheel, for a Python without pip: unzip, and move the
    ``.data/purelib`` and ``.data/platlib`` contents to the top."""
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    for data in target.glob("*.data"):
        for kind in ("purelib", "platlib"):
            for item in (data / kind).glob("*") if (data / kind).is_dir() else []:
                shutil.move(str(item), str(target / item.name))
        shutil.rmtree(data)


# `nvidia` is shared: DALI and its codec libraries install into it here, torch's CUDA libraries on the
# machine. Some of these wheels ship an `nvidia/__init__.py` (nvimgcodec, nvjpeg2k, nvtiff; the CUDA
# wheels under torch often too), and a regular package first on the path hides every other `nvidia`
# folder from imports. A pkgutil-style namespace package (`pkgutil.extend_path`) imports from all of them.
NVIDIA_INIT = (
    "# written by benchmarks/gpu_wheels.py: `nvidia` spans this folder and the machine's (see there)\n"
    "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
)


def install(folder: Path, target_root: Path, python: str | None = None) -> Path:
    """Check, join and install the wheel set in ``folder`` into a fresh folder under ``target_root``
    (returned; reused when the same set was installed before)."""
    folder, target_root = Path(folder).resolve(), Path(target_root).resolve()
    python = python or sys.executable
    if not folder.is_dir():
        raise WheelError(
            f"no wheel folder at {folder}: run `make gpu-wheels` where there is network and copy it"
        )
    check_python(folder)
    key = hashlib.sha256((folder / SUMS).read_bytes()).hexdigest()[:12] if (folder / SUMS).is_file() else ""
    target = target_root / f"site-{key}"
    if (target / ".installed").is_file() and (target / ".installed").read_text().strip() == key:
        return target
    target_root.mkdir(parents=True, exist_ok=True)
    tmp = target_root / f"site-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=target_root) as work:
        wheels = gather(folder, Path(work))
        if has_pip(python):
            cmd = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--disable-pip-version-check",
                   "--target", str(tmp), *map(str, wheels)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:]
                raise WheelError(f"pip could not install the wheels of {folder}: {' '.join(tail)[:300]}")
        else:
            for wheel in wheels:
                unpack_wheel(wheel, tmp)
    if (tmp / "nvidia").is_dir():
        (tmp / "nvidia" / "__init__.py").write_text(NVIDIA_INIT)
    (tmp / ".installed").write_text(key + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="resolve, download and split the wheel set (needs network)")
    d.add_argument("--python", default="3.12", help="X.Y of the GPU machine's Python")
    d.add_argument("--cuda", type=int, choices=[12, 13], default=13, help="CUDA major of the GPU machine")
    d.add_argument("--out", type=Path, default=ROOT / "gpu-wheels")
    i = sub.add_parser("install", help="check, join and install a wheel folder into a private target")
    i.add_argument("--wheels", type=Path, required=True)
    i.add_argument("--target", type=Path, default=ROOT / ".cache" / "gpu-check")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "download":
            manifest = download(args.python, args.cuda, args.out)
            total = sum(w["size"] for w in manifest["wheels"])
            split = [w for w in manifest["wheels"] if w["parts"]]
            print(f"{args.out}: {len(manifest['wheels'])} wheels for Python {args.python} / CUDA {args.cuda}, "
                  f"{total / 2**20:.0f} MiB; split into parts of {PART_SIZE // 2**20} MiB: "
                  + (", ".join(f"{w['file']} ({len(w['parts'])})" for w in split) or "none"))  # fmt: skip
        else:
            print(install(args.wheels, args.target))
    except WheelError as err:
        print(f"gpu-wheels: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
