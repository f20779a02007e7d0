"""Shared by the benchmarks: machine description and dated result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        if m:
            cpu = m.group(1).strip()
    except OSError:
        pass
    mem = 0
    try:
        m = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
        mem = int(m.group(1)) // (1024 * 1024) if m else 0
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a benchmark runs without torch too
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "gpu": gpu,
        "python": platform.python_version(),
    }


def machine_slug(info: dict) -> str:
    kind = info["gpu"] or f"cpu{info['cores']}"
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def result_base(name: str, info: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """``{out_dir}/{date}-{name}-{machine}`` (no suffix): where `write_result` writes today's file."""
    stamp = dt.date.today().isoformat()
    return Path(out_dir or RESULTS) / f"{stamp}-{name}-{machine_slug(info)}"


def write_result(
    name: str, info: dict, results: dict, markdown: str, out_dir: str | os.PathLike | None = None
) -> Path:
    """``{date}-{name}-{machine}.json`` and ``.md`` in ``out_dir`` (default: benchmarks/results)."""
    base = result_base(name, info, out_dir)
    base.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    payload = {"benchmark": name, "date": stamp, "machine": info, "results": results}
    base.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    header = f"# {name} — {stamp}\n\nMachine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB"
    header += f", GPU: {info['gpu'] or 'none'}, Python {info['python']}\n\n"
    base.with_suffix(".md").write_text(header + markdown + "\n")
    return base.with_suffix(".md")
