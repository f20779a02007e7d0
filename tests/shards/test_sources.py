"""Kinetics layouts → records (no video is opened here, so the "videos" are placeholder files).

Trees are built from real rows of the official Kinetics-400 annotation files (tests/data/kinetics400):
ids that start with '-' or '_' and contain '_', labels with spaces, parentheses, an apostrophe and upper
case, time_start >= 1000, is_cc = 1, pandas-style quoting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    K400_TRAIN_CSV,
    K400_VAL_CSV,
    k400_class_names,
    k400_rows,
    k400_stem,
    write_k400_csv,
)

from shards.classes import ClassMap, kinetics400_classes, normalise_label, read_class_file
from shards.sources import SourceError, kinetics_key, kinetics_source, safe_key

CLASSES = k400_class_names()
# Real val rows, one per quirk.
PICK = [
    "--nQbRBEz2s",  # starts with '--'                              air drumming
    "_DNb_6w2cZM",  # starts with '_', '_' inside                   air drumming
    "-10xhPhBo0k",  # starts with '-'                               arm wrestling
    "YiSAKcZsoik",  # time_start >= 1000                            answering questions
    "2BwBZ9IQzAk",  # parentheses                                   hurling (sport)
    "T_-aThrMoNs",  # apostrophe, '_' and '-' inside                massaging person's head
    "chN87Lwj4RM",  # upper case and parentheses                    passing American football (in game)
    "GuFI_K7gqwY",  # is_cc = 1                                     skiing (not slalom or crosscountry)
]
ROWS = {r["youtube_id"]: r for r in k400_rows(PICK)}
ALL_VAL = k400_rows()


def touch(path: Path, data: bytes = b"placeholder, never opened by the source") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def expected(youtube_id: str) -> tuple[str, int, str]:
    row = ROWS.get(youtube_id) or next(r for r in ALL_VAL if r["youtube_id"] == youtube_id)
    return k400_stem(row), CLASSES.index(row["label"]), row["label"]


def by_key(plan):
    return {r.key: r for r in plan.records}


# ------------------------------------------------------------------------------------------------ classes
def test_packaged_class_list_is_the_canonical_400():
    assert kinetics400_classes() == CLASSES
    assert len(CLASSES) == 400 and sorted(CLASSES) == CLASSES
    # the real labels of the val rows are exactly the canonical names
    assert {r["label"] for r in ALL_VAL} <= set(CLASSES)


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("hurling (sport)", "hurling (sport)"),
        ("hurling_(sport)", "hurling (sport)"),
        ("massaging person's head", "massaging person's head"),
        ("massaging_person's_head", "massaging person's head"),
        ("passing_American_football_(in_game)", "passing American football (in game)"),
        ("passing american football (not in game)", "passing American football (not in game)"),
        ('"air drumming"', "air drumming"),
    ],
)
def test_label_spellings_map_to_the_standard_id(spelling, name):
    assert ClassMap(CLASSES).lookup(spelling) == CLASSES.index(name)


def test_unknown_label_and_colliding_class_names():
    assert ClassMap(CLASSES).lookup("flying a carpet") is None
    with pytest.raises(ValueError, match="same label"):
        ClassMap(["air drumming", "air_drumming"])
    assert normalise_label("Massaging_Person's_Head") == normalise_label("massaging person's head")


def test_read_class_file_plain_and_numbered(tmp_path):
    (tmp_path / "a.txt").write_text("zumba\nabseiling\n\n")
    (tmp_path / "b.txt").write_text("0 zumba\n1 abseiling\n")
    assert read_class_file(tmp_path / "a.txt") == ["zumba", "abseiling"]
    assert read_class_file(tmp_path / "b.txt") == ["zumba", "abseiling"]


# --------------------------------------------------------------------------------- flat + annotation CSV
@pytest.fixture
def cvdf_tree(tmp_path):
    """The cvdfoundation layout: k400/{train,val,replacement}/ and k400/annotations/{train,val}.csv, with
    the whole real val CSV (466 rows) and videos for some of its rows only."""
    root = tmp_path / "k400"
    write_k400_csv(root / "annotations" / "val.csv")  # all 466 real rows
    write_k400_csv(root / "annotations" / "train.csv", source=K400_TRAIN_CSV)
    for yid in PICK:
        touch(root / "val" / f"{expected(yid)[0]}.mp4")
    # a corrupt CVDF file with a fixed copy in replacement/
    corrupt, _, _ = expected("QfuO07EqYhI")
    touch(root / "val" / f"{corrupt}.mp4")
    touch(root / "replacement" / "replacement_for_corrupted_k400" / f"{corrupt}.mp4")
    # a replacement that matches no row, a download that never finished, another split's videos
    touch(root / "replacement" / "replacement_for_corrupted_k400" / "zzzzzzzzzzz_000000_000010.mp4")
    part_key, _, _ = expected("9aSI6RpUZRE")
    touch(root / "val" / f"{part_key}.mp4.part")
    touch(root / "val" / f"{part_key}.mp4.ytdl")
    for row in k400_rows(source=K400_TRAIN_CSV):
        touch(root / "train" / f"{k400_stem(row)}.mp4")
    other_split_key, _, _ = expected("2-OY-ICQecA")  # a val row whose only copy sits in train/
    touch(root / "train" / f"{other_split_key}.mp4")
    touch(root / "val" / ".hidden" / f"{expected('9W09aRkVYC4')[0]}.mp4")
    touch(root / "val" / f"._{expected('nU8SAk0OogA')[0]}.mp4")  # macOS AppleDouble file
    return root


def test_flat_layout_with_official_csv(cvdf_tree):
    plan = kinetics_source(cvdf_tree, "val")
    assert plan.layout == "annotations" and plan.dataset == "kinetics400"
    assert plan.classes == CLASSES
    records = by_key(plan)
    wanted = {expected(y)[0] for y in [*PICK, "QfuO07EqYhI"]}
    assert set(records) == wanted
    for yid in [*PICK, "QfuO07EqYhI"]:
        key, label, name = expected(yid)
        rec = records[key]
        row = next(r for r in ALL_VAL if r["youtube_id"] == yid)
        assert rec.split == "val"
        assert (rec.label, rec.label_name) == (label, name)
        assert rec.meta == {
            "youtube_id": yid,
            "time_start": int(row["time_start"]),
            "time_end": int(row["time_end"]),
        }
        assert "." not in rec.key
        assert all(Path(c).is_absolute() and Path(c).is_file() for c in rec.candidates)
    # every other row of the CSV is counted as missing, with a reject that names it
    assert plan.missing == len(ALL_VAL) - len(wanted)
    missing = {r.key: r for r in plan.rejects}
    assert len(missing) == plan.missing
    assert all(r.reason.startswith("missing") for r in missing.values())
    assert missing[expected("9aSI6RpUZRE")[0]].label == "drop kicking"  # only a .part: missing
    assert expected("2-OY-ICQecA")[0] in missing  # only in train/: never this split's
    assert expected("9W09aRkVYC4")[0] in missing  # hidden folders are not searched
    assert expected("nU8SAk0OogA")[0] in missing  # '._' AppleDouble files are not videos


def test_replacement_copy_is_tried_first_and_orphans_are_ignored(cvdf_tree):
    plan = kinetics_source(cvdf_tree, "val")
    key = expected("QfuO07EqYhI")[0]
    rel = [str(Path(c).relative_to(cvdf_tree)) for c in by_key(plan)[key].candidates]
    assert rel == [f"replacement/replacement_for_corrupted_k400/{key}.mp4", f"val/{key}.mp4"]
    every_candidate = [c for r in plan.records for c in r.candidates]
    assert not any("zzzzzzzzzzz" in c or c.endswith(".part") or "/train/" in c for c in every_candidate)


def test_train_split_of_the_same_tree_reads_pandas_quoted_csv(cvdf_tree):
    plan = kinetics_source(cvdf_tree, "train")
    rows = k400_rows(source=K400_TRAIN_CSV)
    assert sorted(by_key(plan)) == sorted(k400_stem(r) for r in rows)
    for r in rows:
        rec = by_key(plan)[k400_stem(r)]
        assert rec.label == CLASSES.index(r["label"]) and rec.label_name == r["label"]
        assert rec.candidates == (str((cvdf_tree / "train" / f"{k400_stem(r)}.mp4").resolve()),)
    assert plan.missing == 0 and plan.rejects == []


def test_mmaction_csv_name_and_videos_folder(tmp_path):
    root = tmp_path / "kinetics400"
    write_k400_csv(root / "annotations" / "kinetics_val.csv", PICK[:4])
    write_k400_csv(root / "annotations" / "kinetics_train.csv", source=K400_TRAIN_CSV)
    for yid in PICK[:4]:
        touch(root / "videos_val" / f"{expected(yid)[0]}.mp4")
    plan = kinetics_source(root, "val")
    assert plan.layout == "annotations"
    assert [Path(p).name for p in plan.details["annotations"]] == ["kinetics_val.csv"]
    assert sorted(by_key(plan)) == sorted(expected(y)[0] for y in PICK[:4])
    assert plan.missing == 0


def test_one_csv_with_rows_of_several_splits(tmp_path):
    root = tmp_path / "k400"
    text = K400_VAL_CSV.read_text().splitlines(keepends=True)
    train_rows = K400_TRAIN_CSV.read_text().splitlines(keepends=True)[1:]
    (root / "data").mkdir(parents=True)
    (root / "data" / "kinetics_400_all.csv").write_text(text[0] + "".join(text[1:4] + train_rows))
    for row in k400_rows(source=K400_VAL_CSV)[:3] + k400_rows(source=K400_TRAIN_CSV):
        touch(root / "videos" / f"{k400_stem(row)}.mkv")
    assert sorted(by_key(kinetics_source(root, "val"))) == sorted(k400_stem(r) for r in ALL_VAL[:3])
    assert sorted(by_key(kinetics_source(root, "train"))) == sorted(
        k400_stem(r) for r in k400_rows(source=K400_TRAIN_CSV)
    )


def test_explicit_annotations_outside_root_and_mixed_containers(tmp_path):
    root = tmp_path / "videos"
    csv_path = write_k400_csv(tmp_path / "meta" / "my_annotations.csv", PICK)
    exts = [".mp4", ".webm", ".mkv", ".MP4"]
    for i, yid in enumerate(PICK):
        touch(root / f"{expected(yid)[0]}{exts[i % len(exts)]}")
    plan = kinetics_source(root, "val", annotations=csv_path)
    assert sorted(by_key(plan)) == sorted(expected(y)[0] for y in PICK)
    for i, yid in enumerate(PICK):
        assert by_key(plan)[expected(yid)[0]].candidates[0].endswith(exts[i % len(exts)])


def test_segments_of_one_youtube_video_are_told_apart(tmp_path):
    root = tmp_path / "k400"
    write_k400_csv(root / "annotations" / "val.csv", ["--nQbRBEz2s"])
    key = expected("--nQbRBEz2s")[0]
    touch(root / "val" / "--nQbRBEz2s_000000_000010.mp4")  # another clip of the same youtube video
    plan = kinetics_source(root, "val")
    assert plan.records == [] and plan.missing == 1 and plan.rejects[0].key == key
    touch(root / "val" / "--nQbRBEz2s_104_114.mp4")  # times without zero padding still match
    plan = kinetics_source(root, "val")
    assert [r.key for r in plan.records] == [key]
    assert plan.records[0].candidates[0].endswith("--nQbRBEz2s_104_114.mp4")


def test_unknown_label_rejects_only_that_row(tmp_path):
    root = tmp_path / "k400"
    csv_path = write_k400_csv(root / "annotations" / "val.csv", PICK[:3])
    with open(csv_path, "a") as f:
        f.write('"flying a carpet",AAAAAAAAAAA,5,15,val,0\n')
    for yid in PICK[:3]:
        touch(root / "val" / f"{expected(yid)[0]}.mp4")
    touch(root / "val" / "AAAAAAAAAAA_000005_000015.mp4")
    plan = kinetics_source(root, "val")
    assert sorted(by_key(plan)) == sorted(expected(y)[0] for y in PICK[:3])
    [reject] = plan.rejects
    assert reject.key == "AAAAAAAAAAA_000005_000015"
    assert reject.reason.startswith("unknown label") and "flying a carpet" in reject.reason
    assert reject.label == "flying a carpet"
    assert plan.missing == 0


def test_duplicate_rows_are_rejected_once(tmp_path):
    root = tmp_path / "k400"
    csv_path = write_k400_csv(root / "annotations" / "val.csv", PICK[:2])
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(lines + lines[1:2]))
    for yid in PICK[:2]:
        touch(root / "val" / f"{expected(yid)[0]}.mp4")
    plan = kinetics_source(root, "val")
    assert len(plan.records) == 2
    assert [(r.key, r.reason.split(" ")[0]) for r in plan.rejects] == [(expected(PICK[0])[0], "duplicate")]


def test_classes_file_overrides_the_ids(tmp_path):
    root = tmp_path / "k400"
    write_k400_csv(root / "annotations" / "val.csv", PICK)
    for yid in PICK:
        touch(root / "val" / f"{expected(yid)[0]}.mp4")
    classes = tmp_path / "my_classes.txt"
    classes.write_text("skiing (not slalom or crosscountry)\nhurling (sport)\nair drumming\n")
    plan = kinetics_source(root, "val", classes_file=classes)
    assert plan.classes == ["skiing (not slalom or crosscountry)", "hurling (sport)", "air drumming"]
    got = {r.meta["youtube_id"]: r.label for r in plan.records}
    assert got == {"GuFI_K7gqwY": 0, "2BwBZ9IQzAk": 1, "--nQbRBEz2s": 2, "_DNb_6w2cZM": 2}
    rejected = {r.key: r.reason for r in plan.rejects}
    assert sorted(rejected) == sorted(expected(y)[0] for y in PICK if y not in got)
    assert all(reason.startswith("unknown label") for reason in rejected.values())


def test_symlinked_files_are_followed(tmp_path):
    disk = tmp_path / "disk"
    root = tmp_path / "k400"
    write_k400_csv(root / "annotations" / "val.csv", PICK[:2])
    for yid in PICK[:2]:
        target = touch(disk / f"{expected(yid)[0]}.mp4")
        (root / "val").mkdir(parents=True, exist_ok=True)
        (root / "val" / target.name).symlink_to(target)
    assert sorted(by_key(kinetics_source(root, "val"))) == sorted(expected(y)[0] for y in PICK[:2])


def test_symlink_loops_are_walked_once(tmp_path):
    root = tmp_path / "k400"
    write_k400_csv(root / "annotations" / "val.csv", PICK[:2])
    for yid in PICK[:2]:
        touch(root / "val" / f"{expected(yid)[0]}.mp4")
    (root / "val" / "again").symlink_to(root / "val", target_is_directory=True)
    (root / "val" / "up").symlink_to(root, target_is_directory=True)
    plan = kinetics_source(root, "val")
    assert sorted(by_key(plan)) == sorted(expected(y)[0] for y in PICK[:2])
    assert all(len(r.candidates) == 1 for r in plan.records)


@pytest.mark.parametrize("layout", ["flat", "class-folders"])
def test_symlinked_split_folder_is_searched(tmp_path, layout):
    """k400/val -> /mnt/disk2/val: a common way to spread a download over disks."""
    disk = tmp_path / "disk" / "kinetics_val"
    root = tmp_path / "k400"
    root.mkdir()
    if layout == "flat":
        write_k400_csv(root / "annotations" / "val.csv", PICK[:3])
    for yid in PICK[:3]:
        key, _, name = expected(yid)
        touch(disk / (name if layout == "class-folders" else "") / f"{key}.mp4")
    (root / "val").symlink_to(disk, target_is_directory=True)
    plan = kinetics_source(root, "val")
    assert plan.layout == ("annotations" if layout == "flat" else "class-folders")
    assert sorted(by_key(plan)) == sorted(expected(y)[0] for y in PICK[:3])
    assert plan.missing == 0


# ------------------------------------------------------------------------------------------ class folders
CLASS_FOLDER_VIDEOS = [("--nQbRBEz2s", ".mp4"), ("_DNb_6w2cZM", ".webm"), ("2BwBZ9IQzAk", ".mkv"),
                       ("T_-aThrMoNs", ".mp4"), ("chN87Lwj4RM", ".webm"), ("GuFI_K7gqwY", ".mkv")]  # fmt: skip


@pytest.mark.parametrize("underscores", [False, True], ids=["verbatim", "underscores"])
def test_class_folders(tmp_path, underscores):
    root = tmp_path / "kinetics"
    split_dir = "videos_val" if underscores else "val"
    for yid, ext in CLASS_FOLDER_VIDEOS:
        key, _, name = expected(yid)
        folder = name.replace(" ", "_") if underscores else name
        touch(root / split_dir / folder / f"{key}{ext}")
        touch(root / split_dir / folder / f"{key}{ext}.part")
    touch(root / "train" / "abseiling" / "p1VKQa4N-hg_000000_000010.mp4")  # another split
    plan = kinetics_source(root, "val")
    assert plan.layout == "class-folders" and plan.missing == 0 and plan.rejects == []
    records = by_key(plan)
    assert sorted(records) == sorted(expected(y)[0] for y, _ in CLASS_FOLDER_VIDEOS)
    for yid, ext in CLASS_FOLDER_VIDEOS:
        key, label, name = expected(yid)
        rec = records[key]
        assert (rec.label, rec.label_name) == (label, name)  # standard ids, canonical names
        row = ROWS[yid]
        assert rec.meta == {
            "youtube_id": yid,
            "time_start": int(row["time_start"]),
            "time_end": int(row["time_end"]),
        }
        assert len(rec.candidates) == 1 and rec.candidates[0].endswith(ext)


def test_class_folders_root_is_the_split_folder_itself(tmp_path):
    root = tmp_path / "k400" / "val"
    for yid, ext in CLASS_FOLDER_VIDEOS[:3]:
        key, _, name = expected(yid)
        touch(root / name / f"{key}{ext}")
    plan = kinetics_source(root, "val")
    assert plan.layout == "class-folders"
    assert sorted(by_key(plan)) == sorted(expected(y)[0] for y, _ in CLASS_FOLDER_VIDEOS[:3])


def test_class_folders_unknown_class_and_duplicates_are_rejected(tmp_path):
    root = tmp_path / "k400"
    key, label, name = expected("--nQbRBEz2s")
    touch(root / "val" / name / f"{key}.mp4")
    touch(root / "val" / name / f"{key}.webm")  # same key twice
    touch(root / "val" / "not a kinetics class" / "p1VKQa4N-hg_000000_000010.mp4")
    plan = kinetics_source(root, "val")
    assert [r.key for r in plan.records] == [key] and plan.records[0].label == label
    reasons = {(r.key, r.reason.split(" ")[0]) for r in plan.rejects}
    assert reasons == {(key, "duplicate"), ("p1VKQa4N-hg_000000_000010", "unknown")}
    unknown = next(r for r in plan.rejects if r.reason.startswith("unknown"))
    assert unknown.path == "val/not a kinetics class/p1VKQa4N-hg_000000_000010.mp4"
    assert unknown.label == "not a kinetics class"


def test_reject_keys_keep_ids_that_start_with_underscore(tmp_path):
    """A reject's key is the sample key the file would have had, leading '_' included."""
    root = tmp_path / "k400"
    key = expected("_DNb_6w2cZM")[0]
    touch(root / "val" / "not a kinetics class" / f"{key}.mp4")
    plan = kinetics_source(root, "val")
    assert [r.key for r in plan.rejects] == [key]
    # the list layout's out-of-range reject too
    touch(root / "clips" / f"{key}.mp4")
    (root / "list.txt").write_text(f"clips/{key}.mp4 400\n")
    plan = kinetics_source(root, "val", list_file=root / "list.txt")
    assert [r.key for r in plan.rejects] == [key]


def test_non_kinetics_file_names_get_dot_free_keys(tmp_path):
    root = tmp_path / "k400"
    touch(root / "val" / "abseiling" / "my.holiday clip.mp4")
    plan = kinetics_source(root, "val")
    [rec] = plan.records
    assert rec.key == safe_key("my.holiday clip") and "." not in rec.key and " " not in rec.key
    assert rec.label == CLASSES.index("abseiling") and rec.meta == {}


# ------------------------------------------------------------------------------------------- list files
@pytest.mark.parametrize("sep", [" ", ","], ids=["space", "comma"])
def test_list_file(tmp_path, sep):
    root = tmp_path / "k400"
    lines = []
    for yid, ext in CLASS_FOLDER_VIDEOS:
        key, label, name = expected(yid)
        touch(root / "clips" / f"{key}{ext}")
        lines.append(f"clips/{key}{ext}{sep}{label}")
    lines.append(f"clips/p1VKQa4N-hg_000000_000010.mp4{sep}0")  # not on disk: missing
    lines.append(f"clips/{expected('--nQbRBEz2s')[0]}.mp4{sep}1")  # repeated: duplicate
    lines.append("")
    lines.append("# a comment")
    list_file = tmp_path / "val_list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    plan = kinetics_source(root, "val", list_file=list_file)
    assert plan.layout == "list"
    records = by_key(plan)
    assert sorted(records) == sorted(expected(y)[0] for y, _ in CLASS_FOLDER_VIDEOS)
    for yid, _ in CLASS_FOLDER_VIDEOS:
        key, label, name = expected(yid)
        assert (records[key].label, records[key].label_name) == (label, name)
        assert records[key].meta["youtube_id"] == yid
    assert plan.missing == 1
    reasons = sorted((r.key, r.reason.split(" ")[0].rstrip(":")) for r in plan.rejects)
    assert reasons == sorted(
        [("p1VKQa4N-hg_000000_000010", "missing"), (expected("--nQbRBEz2s")[0], "duplicate")]
    )


def test_list_file_is_found_under_root_and_checks_label_range(tmp_path):
    root = tmp_path / "k400"
    key, label, _ = expected("T_-aThrMoNs")
    touch(root / "videos" / f"{key}.mp4")
    touch(root / "videos" / "abc.mp4")
    touch(root / "videos" / "def.mp4")
    (root / "kinetics400_val_list_videos.txt").write_text(
        f"videos/{key}.mp4 {label}\nvideos/abc.mp4 400\nvideos/def.mp4 -1\nno label here\n"
    )
    plan = kinetics_source(root, "val")
    assert plan.layout == "list"
    assert [(r.key, r.label) for r in plan.records] == [(key, label)]
    reasons = sorted(r.reason for r in plan.rejects)
    assert len(reasons) == 3
    assert sum("out of range" in r for r in reasons) == 2
    assert sum("not 'path label_id'" in r for r in reasons) == 1


def test_pyslowfast_list_named_like_the_split(tmp_path):
    root = tmp_path / "k400"
    key, label, _ = expected("2BwBZ9IQzAk")
    touch(root / "videos" / f"{key}.mp4")
    (root / "val.csv").write_text(f"videos/{key}.mp4 {label}\n")  # a list file, not an annotation CSV
    plan = kinetics_source(root, "val")
    assert plan.layout == "list" and [(r.key, r.label) for r in plan.records] == [(key, label)]


# ----------------------------------------------------------------------------------------------- errors
def test_errors_say_what_to_do(tmp_path):
    root = tmp_path / "k400"
    with pytest.raises(SourceError, match="no such directory"):
        kinetics_source(root, "val")
    (root / "train").mkdir(parents=True)
    with pytest.raises(SourceError, match="unknown split"):
        kinetics_source(root, "validation-set")
    with pytest.raises(SourceError, match="found a 'train' folder"):
        kinetics_source(root, "train")
    with pytest.raises(SourceError, match="no Kinetics 'val' videos"):
        kinetics_source(root, "val")
    not_csv = touch(tmp_path / "notes.csv", b"just,some,text\n1,2,3\n")
    with pytest.raises(SourceError, match="not a Kinetics annotation CSV"):
        kinetics_source(root, "val", annotations=not_csv)
    with pytest.raises(SourceError, match="no such file"):
        kinetics_source(root, "val", annotations=tmp_path / "nope.csv")
    with pytest.raises(SourceError, match="either --annotations or --list"):
        kinetics_source(root, "val", annotations=not_csv, list_file=not_csv)
    with pytest.raises(SourceError, match="--list"):
        kinetics_source(root, "val", list_file=tmp_path / "nope.txt")
    with pytest.raises(SourceError, match="--classes"):
        kinetics_source(root, "val", classes_file=tmp_path / "nope.txt")
    write_k400_csv(root / "annotations" / "train.csv", source=K400_TRAIN_CSV)
    with pytest.raises(SourceError, match="no rows for split 'val'"):
        kinetics_source(root, "val")


def test_kinetics_key_format():
    assert kinetics_key("--nQbRBEz2s", 104, 114) == "--nQbRBEz2s_000104_000114"
    assert kinetics_key("YiSAKcZsoik", 2857, 2867) == "YiSAKcZsoik_002857_002867"
