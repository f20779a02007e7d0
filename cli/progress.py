"""Rich progress display and summary tables for the CLI."""

from __future__ import annotations

import time

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class ShardProgress:
    """Implements shards.build.Progress: videos/s, MB/s and rejects as the run goes."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[vps]:.1f} videos/s"),
            TextColumn("{task.fields[mbps]:.1f} MB/s"),
            TextColumn("[red]{task.fields[rejects]} rejected"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def start(self, split, total, done, rejected):
        self.t0 = time.perf_counter()
        self.count = self.nbytes = 0
        self.rejects = rejected
        self.task = self.progress.add_task(
            f"shard {split}", total=total, completed=done, vps=0.0, mbps=0.0, rejects=rejected
        )

    def update(self, accepted, nbytes):
        self.count += 1
        self.nbytes += nbytes
        self.rejects += not accepted
        dt = max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(
            self.task, advance=1, vps=self.count / dt, mbps=self.nbytes / dt / 1e6, rejects=self.rejects
        )

    def finish(self, split):
        self.progress.update(self.task, completed=self.progress.tasks[self.task].total)


def print_shard_summary(console: Console, report) -> None:
    layouts = ", ".join(sorted({r.layout for r in report.splits.values()}))
    table = Table(title=f"stts shard: {report.dataset} ({layouts}) → {report.out}", box=box.SIMPLE_HEAD)
    for col in ("split", "videos", "rejected", "missing", "shards", "size", "time", "vid/s", "MB/s"):
        table.add_column(col, justify="left" if col == "split" else "right", no_wrap=True)
    reasons: dict[tuple[str, str], int] = {}
    for split, r in report.splits.items():
        rate = r.processed / r.seconds if r.seconds else 0.0
        mbps = r.processed_bytes / r.seconds / 1e6 if r.seconds else 0.0
        note = " (already complete)" if r.already_complete else (f" (resumed after {r.resumed_shards} shards)"
                                                                 if r.resumed_shards else "")  # fmt: skip
        table.add_row(
            split + note, str(r.samples), str(r.rejected), str(r.missing), str(r.shards),
            human_bytes(r.bytes), f"{r.seconds:.1f}s", f"{rate:.1f}", f"{mbps:.1f}",
        )  # fmt: skip
        for reason, n in r.reasons.items():
            reasons[(split, reason)] = n
    console.print(table)
    if reasons:
        rt = Table(title="rejected, by reason")
        rt.add_column("split")
        rt.add_column("reason")
        rt.add_column("videos", justify="right")
        for (split, reason), n in sorted(reasons.items()):
            rt.add_row(split, reason, str(n))
        console.print(rt)
    console.print(f"manifest: {report.out}/manifest.json · classes: {report.out}/classes.txt")
    for split in report.splits:
        console.print(
            f"{split}: {report.out}/{split}-*.tar (+ .idx) · rejects: {report.out}/{split}-rejects.jsonl"
        )
