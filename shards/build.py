"""`stts shard`: a source's plan → probed (optionally re-encoded) samples → shards, manifest, rejects.

Stages, in order:
1. the source lists records (and rejects rows it can refuse without opening a file);
2. records are put in a fixed order: sorted by key, the train split shuffled with the seed;
3. a process pool probes (and re-encodes or generates) records; results come back in that order;
4. the writer appends accepted samples to shards; after every finished shard a journal notes how far the
   run got, so `--resume` can keep complete shards and continue after the last one;
5. at the end, `{split}-rejects.jsonl` and `manifest.json` are written (temp name, then rename).
Worker count never changes the output: the same inputs and options give byte-identical files.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .format import I32_FIELDS, MANIFEST, MANIFEST_VERSION, pack_i32, read_manifest
from .probe import PROBE_MODES, ProbeError, probe
from .reencode import ReencodeSpec, reencode
from .sources import SPLITS, VIDEO_EXTS, Record, Reject, SourceError, SourcePlan, kinetics_source
from .synthetic import SyntheticConfig
from .writer import Member, ShardInfo, ShardWriter, atomic_write_text

STATE_DIR = ".stts-shard"
SOURCES = ("kinetics400", "synthetic")


@dataclass(frozen=True)
class ShardConfig:
    src: str
    out: str
    split: str | None = None  # None: every split the source has (synthetic: train and val)
    root: str | None = None
    annotations: str | None = None
    list_file: str | None = None
    classes_file: str | None = None
    probe: str = "full"
    max_count: int | None = None  # None: no limit
    max_size: int = 1_000_000_000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    reencode: ReencodeSpec | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # fsync each shard before renaming it (a power cut cannot leave a complete-looking torn shard); off
    # trades that for speed when the disk is slow to flush. The bytes written are the same either way.
    fsync: bool = True

    def options(self) -> dict[str, Any]:
        """What determines the output bytes (and so must match on --resume); not workers, not paths."""
        opts = {
            "src": self.src,
            "probe": self.probe,
            "max_count": self.max_count,
            "max_size": self.max_size,
            "seed": self.seed,
            "reencode": self.reencode.to_dict() if self.reencode else None,
        }
        if self.src == "synthetic":
            opts["synthetic"] = asdict(self.synthetic)
        else:
            opts.update(
                root=_abs(self.root), annotations=_abs(self.annotations), list=_abs(self.list_file),
                classes=_abs(self.classes_file),
            )  # fmt: skip
        return opts


def _abs(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


class Progress(Protocol):
    def start(self, split: str, total: int, done: int, rejected: int) -> None: ...
    def update(self, accepted: bool, nbytes: int) -> None: ...
    def finish(self, split: str) -> None: ...


class _NoProgress:
    def start(self, split, total, done, rejected):
        pass

    def update(self, accepted, nbytes):
        pass

    def finish(self, split):
        pass


@dataclass
class SplitReport:
    split: str
    layout: str
    samples: int = 0
    rejected: int = 0
    missing: int = 0
    shards: int = 0
    bytes: int = 0
    seconds: float = 0.0
    processed: int = 0  # videos probed in this run (less than the total after --resume)
    processed_bytes: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    codecs: dict[str, int] = field(default_factory=dict)
    resumed_shards: int = 0
    already_complete: bool = False


@dataclass
class BuildReport:
    out: str
    dataset: str
    splits: dict[str, SplitReport]


def reason_category(reason: str) -> str:
    return re.split(r"[:(']", reason, maxsplit=1)[0].strip()


# ---------------------------------------------------------------------------------------------- workers
def _process(record: Record, probe_mode: str, spec: ReencodeSpec | None, workdir: str) -> dict[str, Any]:
    """Runs in a worker: make the video if synthetic, probe the candidates in order, re-encode."""
    extra: dict[str, Any] = {}
    candidates = record.candidates
    if record.generate is not None:
        from .synthetic import extension, generate_file

        cfg, sample = record.generate
        path = Path(workdir) / f"{record.key}.{extension(cfg)}"
        extra = generate_file(cfg, sample, path)
        candidates = (str(path),)
    errors = []
    for cand in candidates:
        if spec is None and not cand.lower().endswith(VIDEO_EXTS):
            ext = Path(cand).suffix or "(none)"
            errors.append((cand, f"container {ext} is not one of {', '.join(VIDEO_EXTS)}; pass --reencode"))
            continue
        try:
            info = probe(cand, probe_mode).to_dict()
        except ProbeError as err:
            errors.append((cand, str(err)))
            continue
        result = {"ok": True, "path": cand, "info": info, "extra": extra, "payload": cand, "reencoded": None}
        if spec is not None:
            dst = Path(workdir) / f"{record.key}.{spec.extension}"
            try:
                result["reencoded"] = reencode(cand, dst, spec, source_fps=info["fps"])
            except Exception as err:  # noqa: BLE001 - any failure of a bad file is a reject, not a crash
                dst.unlink(missing_ok=True)
                errors.append((cand, f"re-encode failed: {' '.join(str(err).split())[:200]}"))
                continue
            result["payload"] = str(dst)
        # hashed here, not in the writing process, which is the one that must keep up with the disk
        result["sha256"] = _sha256_file(cand)
        if record.generate is not None:
            result["generated"] = True
        return result
    if len(errors) == 1:
        return {"ok": False, "path": errors[0][0], "reason": errors[0][1]}
    return {
        "ok": False,
        "path": errors[0][0],
        "reason": "; ".join(f"{Path(p).name}: {r}" for p, r in errors),
    }


def _ignore_sigint() -> None:
    # Ctrl-C is the main process's to handle (it discards the open shard); workers just stop with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _process_many(records: list[Record], *args) -> list[dict[str, Any]]:
    return [_process(rec, *args) for rec in records]


def _ordered_results(records: list[Record], cfg: ShardConfig, workdir: Path):
    """Yield (record, result) in the order of `records`, computed by `cfg.workers` processes."""
    args = (cfg.probe, cfg.reencode, str(workdir))
    if cfg.workers <= 1:
        for rec in records:
            yield rec, _process(rec, *args)
        return
    # A fast probe takes well under a millisecond, less than sending a task to a worker: send them in
    # chunks. Decoding, re-encoding and generating are slow enough to go one by one.
    light = cfg.probe == "fast" and cfg.reencode is None and cfg.src != "synthetic"
    chunk = 16 if light else 1
    ctx = multiprocessing.get_context("fork")
    window = cfg.workers * 4
    with cf.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx, initializer=_ignore_sigint) as pool:
        pending: collections.deque = collections.deque()
        try:
            for i in range(0, len(records), chunk):
                batch = records[i : i + chunk]
                pending.append((batch, pool.submit(_process_many, batch, *args)))
                if len(pending) >= window:
                    batch0, fut = pending.popleft()
                    yield from zip(batch0, fut.result(), strict=True)
            while pending:
                batch0, fut = pending.popleft()
                yield from zip(batch0, fut.result(), strict=True)
        finally:
            for _, fut in pending:
                fut.cancel()


# --------------------------------------------------------------------------------------------- planning
def plan_split(cfg: ShardConfig, split: str, workdir: Path) -> SourcePlan:
    if cfg.src == "kinetics400":
        if cfg.root is None:
            raise SourceError("--src kinetics400 needs --root DIR (the folder of your Kinetics download)")
        return kinetics_source(
            cfg.root,
            split,
            annotations=cfg.annotations,
            list_file=cfg.list_file,
            classes_file=cfg.classes_file,
        )
    if cfg.src == "synthetic":
        from .synthetic import class_names, plan

        names = class_names(cfg.synthetic)
        records = [
            Record(s.key, split, s.label, names[s.label], (), {}, generate=(cfg.synthetic, s))
            for s in plan(cfg.synthetic, split)
        ]
        return SourcePlan("synthetic", "synthetic", names, records, [], 0, None, {})
    raise SourceError(f"unknown source {cfg.src!r}; choose one of {', '.join(SOURCES)}")


def _splits(cfg: ShardConfig) -> list[str]:
    if cfg.split is not None:
        if cfg.split not in SPLITS:
            raise SourceError(f"unknown split {cfg.split!r}; choose one of {', '.join(SPLITS)}")
        if cfg.src == "synthetic" and cfg.split not in cfg.synthetic.splits():
            raise SourceError(f"the synthetic dataset has no '{cfg.split}' split; choose train or val")
        return [cfg.split]
    if cfg.src == "synthetic":
        return list(cfg.synthetic.splits())
    raise SourceError(f"--src {cfg.src} needs --split ({', '.join(SPLITS)})")


def _check_config(cfg: ShardConfig) -> None:
    if cfg.src not in SOURCES:
        raise SourceError(f"unknown source {cfg.src!r}; choose one of {', '.join(SOURCES)}")
    if cfg.probe not in PROBE_MODES:
        raise SourceError(f"unknown probe mode {cfg.probe!r}; choose one of {', '.join(PROBE_MODES)}")
    if cfg.max_count is not None and cfg.max_count < 1:
        raise SourceError("--max-count must be at least 1")
    if cfg.max_size < 1:
        raise SourceError("--max-size must be positive")
    if cfg.workers < 1:
        raise SourceError("--workers must be at least 1")


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SourceError(f"--out {out} is a file; give a folder for the shards")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".stts-write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as err:
        raise SourceError(
            f"cannot write to --out {out}: {err.strerror or err}; choose a writable folder"
        ) from None


# ---------------------------------------------------------------------------------------------- building
def build_shards(cfg: ShardConfig, progress: Progress | None = None) -> BuildReport:
    _check_config(cfg)
    splits = _splits(cfg)
    out = Path(cfg.out).expanduser()
    # every split's source is checked before anything is created: bad input leaves no trace
    plans = {split: plan_split(cfg, split, out / STATE_DIR / split / "work") for split in splits}
    _prepare_out(out)
    progress = progress or _NoProgress()
    reports: dict[str, SplitReport] = {}
    dataset = cfg.src
    for split, plan in plans.items():
        dataset = plan.dataset
        _check_manifest_compatible(out, plan)
        reports[split] = _build_split(cfg, plan, split, out, progress)
    state_root = out / STATE_DIR
    if state_root.is_dir() and not any(state_root.iterdir()):
        state_root.rmdir()
    return BuildReport(str(out), dataset, reports)


def _split_files(out: Path, split: str) -> list[Path]:
    return sorted(
        [*out.glob(f"{split}-[0-9]*.tar"), *out.glob(f"{split}-[0-9]*.idx"), out / f"{split}-rejects.jsonl"]
    )


def _build_split(
    cfg: ShardConfig, plan: SourcePlan, split: str, out: Path, progress: Progress
) -> SplitReport:
    started = time.perf_counter()
    report = SplitReport(split=split, layout=plan.layout)
    state = out / STATE_DIR / split
    options = {**cfg.options(), "split": split}
    existing = [p for p in _split_files(out, split) if p.exists()]
    if cfg.overwrite:
        for p in [*existing, *out.glob(f".{split}-*.tmp")]:
            p.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)
        _drop_manifest_split(out, split)
    elif (existing or state.exists()) and not cfg.resume:
        raise SourceError(
            f"{out} already has '{split}' shards; pass --resume to finish an interrupted run, "
            "--overwrite to start again, or choose another --out"
        )
    elif existing and not state.exists():
        done = _manifest_split(out, split)
        if done is not None and done.get("options") == options:
            for shard in done["shards"]:
                tar = out / shard["name"]
                if (
                    not tar.exists()
                    or tar.stat().st_size != shard["bytes"]
                    or not tar.with_suffix(".idx").exists()
                ):
                    raise SourceError(
                        f"--resume: {tar.name} (or its .idx) is missing or changed since the run completed; "
                        "pass --overwrite to rebuild the split"
                    )
            report.already_complete = True
            report.samples, report.rejected = done["samples"], done["rejected"]
            report.missing, report.shards = done.get("missing", 0), len(done["shards"])
            report.bytes = sum(s["bytes"] for s in done["shards"])
            return report
        raise SourceError(
            f"{out} holds '{split}' shards from a run with other options; pass --overwrite or choose another --out"
        )

    ordered = sorted(plan.records, key=lambda r: r.key)
    if split == "train":
        random.Random(cfg.seed).shuffle(ordered)

    journals = _load_journals(state, options) if cfg.resume else []
    if not journals:
        shutil.rmtree(state, ignore_errors=True)
        for p in existing:
            p.unlink(missing_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state / "options.json", json.dumps(options, sort_keys=True, indent=1))
    work = state / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    shards: list[dict[str, Any]] = [j["shard"] for j in journals]
    rejects: list[Reject] = list(plan.rejects) + [Reject(**r) for j in journals for r in j["rejects"]]
    codecs = collections.Counter()
    for j in journals:
        codecs.update(j["codecs"])
    position = journals[-1]["position"] if journals else 0
    report.resumed_shards = len(journals)

    since_last: list[Reject] = []
    codecs_since: collections.Counter = collections.Counter()
    cursor = {"position": position}

    def on_shard(info: ShardInfo) -> None:
        entry = {"name": info.name, "samples": info.samples, "bytes": info.bytes}
        journal = {
            "shard": entry,
            "keys": info.keys,
            "position": cursor["position"],
            "rejects": [r.to_dict() for r in since_last],
            "codecs": dict(codecs_since),
        }
        atomic_write_text(state / f"{info.name}.json", json.dumps(journal, sort_keys=True))
        shards.append(entry)
        rejects.extend(since_last)
        codecs.update(codecs_since)
        since_last.clear()
        codecs_since.clear()

    writer = ShardWriter(
        out, split, max_count=cfg.max_count or 2**62, max_size=cfg.max_size, start_index=len(journals),
        on_shard=on_shard, fsync=cfg.fsync,
    )  # fmt: skip
    progress.start(split, len(ordered), position, len(rejects))  # rows refused before probing count too
    try:
        for offset, (rec, res) in enumerate(_ordered_results(ordered[position:], cfg, work)):
            cursor["position"] = position + offset  # records before this one are consumed
            if not res["ok"]:
                rel = _relative(res.get("path"), plan.root)
                since_last.append(Reject(rec.key, res["reason"], rel, rec.label_name))
                report.processed += 1
                progress.update(False, 0)
                continue
            members, nbytes, codec = _sample_members(rec, res, plan)
            writer.add(rec.key, members)
            if res["payload"] != res["path"] or res.get("generated"):
                # re-encoded or generated for this sample only
                Path(res["payload"]).unlink(missing_ok=True)
                if res.get("generated"):
                    Path(res["path"]).unlink(missing_ok=True)
            codecs_since[codec] += 1
            report.processed += 1
            report.processed_bytes += nbytes
            progress.update(True, nbytes)
        cursor["position"] = len(ordered)
        writer.flush()
    except BaseException:
        writer.discard()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rejects.extend(since_last)  # rejects after the last shard
    codecs.update(codecs_since)
    progress.finish(split)

    rejects.sort(key=lambda r: r.key)
    text = "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in rejects)
    atomic_write_text(out / f"{split}-rejects.jsonl", text)
    reasons = collections.Counter(reason_category(r.reason) for r in rejects)
    samples = sum(s["samples"] for s in shards)
    if samples == 0:
        # nothing to train on is an input error, not a dataset: no manifest entry, only the reasons
        shutil.rmtree(state, ignore_errors=True)
        raise SourceError(
            f"no '{split}' video could be used ({len(rejects)} rejected, {plan.missing} of them missing); "
            f"the reasons are in {out / f'{split}-rejects.jsonl'}"
        )
    entry = {
        "shards": shards,
        "samples": samples,
        "rejected": len(rejects),
        "missing": plan.missing,
        "reasons": dict(sorted(reasons.items())),
        "codecs": dict(sorted(codecs.items())),
        "layout": plan.layout,
        "options": options,
    }
    _write_manifest(out, plan, split, entry)
    shutil.rmtree(state, ignore_errors=True)

    report.samples, report.rejected, report.missing = samples, len(rejects), plan.missing
    report.shards, report.bytes = len(shards), sum(s["bytes"] for s in shards)
    report.reasons, report.codecs = dict(reasons), dict(codecs)
    report.seconds = time.perf_counter() - started
    return report


def _relative(path: str | None, root: str | None) -> str | None:
    if path is None:
        return None
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return str(path)


def _sample_members(rec: Record, res: dict[str, Any], plan: SourcePlan) -> tuple[dict[str, bytes], int, str]:
    payload = Path(res["payload"])
    info = dict(res["info"])
    meta: dict[str, Any] = {
        "label": rec.label,
        "label_name": rec.label_name,
        "split": rec.split,
        "youtube_id": rec.meta.get("youtube_id"),
        "time_start": rec.meta.get("time_start"),
        "time_end": rec.meta.get("time_end"),
        "reencoded": res["reencoded"] is not None,
    }
    if res["reencoded"] is not None:
        meta["source_video"] = info  # what the original file held
        info = {**info, **res["reencoded"]}
    meta["sha256"] = res["sha256"]
    if res.get("generated"):
        meta["source"] = f"synthetic/{rec.split}/{Path(res['path']).name}"
    else:
        meta["source"] = _relative(res["path"], plan.root)
    meta.update(info)
    meta.update(res.get("extra") or {})
    ext = payload.suffix.lstrip(".").lower()
    # fixed-width numbers for loaders that need them without parsing JSON (`shards.format.I32_FIELDS`)
    fixed = pack_i32(rec.label, info["num_frames"], info["fps"], info["width"], info["height"])
    members: dict[str, Member] = {
        ext: payload,  # the source file itself: the writer copies it without reading it into Python
        "cls": str(rec.label).encode(),
        "json": json.dumps(meta, sort_keys=True).encode(),
        "i32": fixed,
    }
    return members, payload.stat().st_size, info["codec"]


def _load_journals(state: Path, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The shards of an interrupted run that are complete, in order; everything after them is removed."""
    opts_file = state / "options.json"
    if not opts_file.exists():
        return []
    saved = json.loads(opts_file.read_text())
    if saved != options:
        changed = sorted(k for k in set(saved) | set(options) if saved.get(k) != options.get(k))
        raise SourceError(
            f"--resume: the interrupted run used other options ({', '.join(changed)}); "
            "repeat its options or pass --overwrite"
        )
    out = state.parent.parent
    journals = []
    for i in range(1_000_000):
        jf = state / f"{options['split']}-{i:06d}.tar.json"
        tar = out / f"{options['split']}-{i:06d}.tar"
        if not (jf.exists() and tar.exists() and tar.with_suffix(".idx").exists()):
            break
        journal = json.loads(jf.read_text())
        if tar.stat().st_size != journal["shard"]["bytes"]:
            break
        journals.append(journal)
    # anything past the last complete shard is from the interrupted tail: remove it
    keep = {j["shard"]["name"] for j in journals}
    for p in [*out.glob(f"{options['split']}-[0-9]*.tar"), *out.glob(f"{options['split']}-[0-9]*.idx")]:
        if p.with_suffix(".tar").name not in keep:
            p.unlink()
    for p in [*out.glob(f".{options['split']}-*.tmp"), *state.glob("*.tar.json")]:
        if p.suffix == ".tmp" or p.name.removesuffix(".json") not in keep:
            p.unlink()
    return journals


# --------------------------------------------------------------------------------------------- manifest
def _read_manifest(out: Path) -> dict[str, Any] | None:
    if not (out / MANIFEST).exists():
        return None
    try:
        return read_manifest(out)
    except ValueError:
        raise SourceError(f"{out / MANIFEST} is not valid JSON; remove it or choose another --out") from None


def _manifest_split(out: Path, split: str) -> dict[str, Any] | None:
    manifest = _read_manifest(out)
    return None if manifest is None else manifest.get("splits", {}).get(split)


def _check_manifest_compatible(out: Path, plan: SourcePlan) -> None:
    manifest = _read_manifest(out)
    if manifest is None:
        return
    if manifest.get("dataset") != plan.dataset or manifest.get("classes") != plan.classes:
        raise SourceError(
            f"{out} holds shards of another dataset or class list ({manifest.get('dataset')}); "
            "choose another --out"
        )


def _drop_manifest_split(out: Path, split: str) -> None:
    manifest = _read_manifest(out)
    if manifest is not None and split in manifest.get("splits", {}):
        del manifest["splits"][split]
        atomic_write_text(out / MANIFEST, json.dumps(manifest, sort_keys=True, indent=2) + "\n")


def _write_manifest(out: Path, plan: SourcePlan, split: str, entry: dict[str, Any]) -> None:
    manifest = _read_manifest(out) or {}
    manifest.update(
        format_version=MANIFEST_VERSION,
        dataset=plan.dataset,
        classes=plan.classes,
        num_classes=len(plan.classes),
        members={
            "video": "mp4|webm|mkv",
            "cls": "class id, ASCII",
            "json": "metadata",
            "i32": list(I32_FIELDS),
        },
    )
    manifest.setdefault("splits", {})[split] = entry
    manifest["splits"] = dict(sorted(manifest["splits"].items()))
    atomic_write_text(out / MANIFEST, json.dumps(manifest, sort_keys=True, indent=2) + "\n")
    atomic_write_text(out / "classes.txt", "".join(name + "\n" for name in plan.classes))
