"""Checked datasets: each annotation file is checked once per version of it, not at every config load.

Checking a split parses its json: COCO-sized train and val jsons (444 and 19 MB) take about 20 s of CPU and 3.3 GB
of memory per config load (`tsd-study bench plan`, docs/cluster.md). Planning loads dozens of configs, and every rank
of a job loads its config at every start. `checked_dataset` checks each split once and keeps a record of the passed
check in the data home (``<data home>/checked/``, one small json per annotation file, written atomically). A later
load reads the record instead when the file has the same resolved path, size and modification time (the quick check
rsync and make rely on) and the folders its images lie in have the same modification times (a folder's changes when
a file is added to it or removed from it). A file that fails its check gets no record, so it fails again, with the
same message, at every load. Processes that load a file not yet recorded at the same time (the ranks of a job) wait
on a lock while one of them checks it.

Why the data home: it is per user and writable where dataset folders often are not, every entry point (planning,
jobs, ``train``, ``data check``) already knows it, and on a cluster it is usually on the shared file system, so the
record the planning writes on the login node serves every rank. A data home that cannot be written means checking at
every load, with a warning. ``TSD_STUDY_CHECK_CACHE=off`` checks at every load without records.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from filelock import FileLock

from tsd_study.atomic import write_json_atomic
from tsd_study.data.catalog import default_data_home, locate_dataset
from tsd_study.data.checks import SplitSummary, check_same_categories, check_split
from tsd_study.data.spec import DatasetSpec, SplitFiles

CACHE_VARIABLE = "TSD_STUDY_CHECK_CACHE"
RECORDS_DIRNAME = "checked"
RECORD_VERSION = 1
"""Raise it whenever check_split checks more or differently: records of an older version are then ignored."""


def checked_dataset(ref: str, data_home: Path | None = None,
                    recheck: bool = False) -> tuple[DatasetSpec, dict[str, SplitSummary]]:
    """The dataset a reference names, both splits checked (or found in a record of a passed check), with their
    summaries; ``recheck`` checks even recorded files (and records them again)."""
    name, train, val = locate_dataset(ref, data_home)
    summaries = {split: checked_split(files, data_home, recheck) for split, files in (("train", train), ("val", val))}
    check_same_categories(train, val, summaries)
    classes = tuple(summaries["train"].categories.values())
    return DatasetSpec(name=name, train=train, val=val, classes=classes), summaries


def checked_split(files: SplitFiles, data_home: Path | None = None, recheck: bool = False) -> SplitSummary:
    """check_split's summary of one split, from the record of an earlier check of the same file when there is one."""
    if os.environ.get(CACHE_VARIABLE, "").strip().lower() == "off":
        return check_split(files.ann_file, files.image_dir)
    ann_file = files.ann_file.resolve()
    record_file = record_path(ann_file, data_home)
    summary = None if recheck else _recorded(record_file, ann_file, files.image_dir)
    if summary is not None:
        return summary
    lock = _acquire(record_file)
    try:
        summary = None if recheck or lock is None else _recorded(record_file, ann_file, files.image_dir)
        if summary is None:
            file_key = _file_key(ann_file)  # before the check: a change while it runs makes the record stale
            summary = check_split(files.ann_file, files.image_dir)
            if lock is not None and file_key is not None:
                _write_record(record_file, ann_file, file_key, files.image_dir, summary)
        return summary
    finally:
        if lock is not None:
            lock.release()


def record_path(ann_file: Path, data_home: Path | None = None) -> Path:
    """Where the record of ``ann_file``'s check lives (its resolved path, hashed)."""
    digest = hashlib.sha256(str(ann_file.resolve()).encode()).hexdigest()[:32]
    return (data_home or default_data_home()) / RECORDS_DIRNAME / f"{digest}.json"


def _acquire(record_file: Path) -> FileLock | None:
    """The record's lock, held; None (with a warning) when the records folder cannot be written."""
    try:
        record_file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(record_file.with_suffix(".lock")))
        lock.acquire()
    except OSError as error:
        warnings.warn(f"{record_file.parent}: cannot keep dataset check records ({error}); checking at every load",
                      stacklevel=3)
        return None
    return lock


def _file_key(path: Path) -> list[int] | None:
    """[size, mtime in ns] of a file; None when it cannot be read (check_split then says why)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _folder_times(image_dir: Path, folders: list[str]) -> dict[str, int | None]:
    """The modification time (ns) of each image folder, None for one that is gone."""
    times: dict[str, int | None] = {}
    for folder in folders:
        try:
            times[folder] = (image_dir / folder).stat().st_mtime_ns
        except OSError:
            times[folder] = None
    return times


def _recorded(record_file: Path, ann_file: Path, image_dir: Path) -> SplitSummary | None:
    """The recorded summary when the record matches the file and its image folders as they are now, else None."""
    try:
        record = json.loads(record_file.read_text())
        matches = (record["version"] == RECORD_VERSION and record["ann_file"] == str(ann_file)
                   and record["file_key"] == _file_key(ann_file) and record["image_dir"] == str(image_dir.resolve())
                   and record["image_folders"] == _folder_times(image_dir, list(record["image_folders"])))
        return _summary_from_json(record["summary"]) if matches else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or not a record: check again
        return None


def _write_record(record_file: Path, ann_file: Path, file_key: list[int], image_dir: Path,
                  summary: SplitSummary) -> None:
    record = {"version": RECORD_VERSION, "ann_file": str(ann_file), "file_key": file_key,
              "image_dir": str(image_dir.resolve()),
              "image_folders": _folder_times(image_dir, list(summary.image_folders)),
              "summary": _summary_to_json(summary)}
    try:
        write_json_atomic(record_file, record, indent=1)
    except OSError as error:
        warnings.warn(f"{record_file}: cannot record the check of {ann_file} ({error})", stacklevel=4)


def _summary_to_json(summary: SplitSummary) -> dict[str, Any]:
    data = dataclasses.asdict(summary)
    data["categories"] = [[category_id, name] for category_id, name in summary.categories.items()]
    data["image_folders"] = list(summary.image_folders)
    return data


def _summary_from_json(data: dict[str, Any]) -> SplitSummary:
    return SplitSummary(**{**data, "categories": {int(category_id): str(name) for category_id, name in
                                                  data["categories"]},
                           "image_folders": tuple(data["image_folders"])})
