"""Real training through the CLI: the CPU baseline on shapes (train, resume, test) and on the VOC-100 photos."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tsd_study.checkpoint_compat  # noqa: F401  (what makes the weights_only load below work)

SMOKE_DATASET = "shapes:48"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the console command in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "tsd_study.cli", *args], capture_output=True, text=True,
                          timeout=600)


def last_checkpoint(work_dir: Path) -> Path:
    return Path((work_dir / "last_checkpoint").read_text().strip())


@pytest.mark.slow
def test_baseline_trains_resumes_and_tests(tmp_path: Path) -> None:
    work_dir = tmp_path / "baseline"
    trained = run_cli("train", "cpu/faster_rcnn", "--dataset", SMOKE_DATASET, "--max-iters", "4",
                        "--work-dir", str(work_dir))
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = last_checkpoint(work_dir)
    assert checkpoint.name == "iter_4.pth"
    # torch >= 2.6 loads with weights_only=True: the checkpoint's mmengine objects must be allowed, no env variable.
    assert torch.load(checkpoint, weights_only=True)["meta"]["iter"] == 4

    resumed = run_cli("train", "cpu/faster_rcnn", "--dataset", SMOKE_DATASET, "--max-iters", "6",
                        "--work-dir", str(work_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in (resumed.stdout + resumed.stderr).lower()
    assert last_checkpoint(work_dir).name == "iter_6.pth"

    tested = run_cli("test", "cpu/faster_rcnn", str(last_checkpoint(work_dir)), "--dataset", SMOKE_DATASET,
                       "--work-dir", str(tmp_path / "test"))
    assert tested.returncode == 0, tested.stderr[-3000:]
    metrics = json.loads(tested.stdout.strip().splitlines()[-1])
    assert 0.0 <= metrics["coco/bbox_mAP_50"] <= 1.0


@pytest.mark.slow
def test_voc100_photos_convert_and_train(tmp_path: Path, shared_data: Path) -> None:
    voc = shared_data / "voc100"
    dataset = tmp_path / "voc100"
    converted = run_cli("data", "voc2coco", "--xml", str(voc / "gts" / "pascalvoc_format"),
                          "--images", str(voc / "images"), "--out", str(dataset))
    assert converted.returncode == 0, converted.stderr[-3000:]
    work_dir = tmp_path / "work"
    trained = run_cli("train", "cpu/tsd_pc", "--dataset", str(dataset), "--max-iters", "3",
                      "--work-dir", str(work_dir))
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert last_checkpoint(work_dir).name == "iter_3.pth"
    assert "coco/bbox_mAP" in trained.stdout + trained.stderr


def test_bad_dataset_fails_before_training(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.json").write_text("{not json")
    (broken / "val.json").write_text("{}")
    result = run_cli("train", "cpu/faster_rcnn", "--dataset", str(broken), "--work-dir", str(tmp_path / "w"))
    assert result.returncode == 2
    assert "train.json" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()


def test_bad_switch_names_the_key(tmp_path: Path) -> None:
    result = run_cli("train", "cpu/tsd_pc", "--dataset", SMOKE_DATASET, "--work-dir", str(tmp_path / "w"),
                       "--cfg-options", "model.roi_head.tsd.cls_manner=diagonal")
    assert result.returncode == 2
    assert "model.roi_head.tsd.cls_manner" in result.stderr


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_uninterrupted_one_ends(tmp_path: Path) -> None:
    """A run stopped after its iteration-4 checkpoint and resumed trains the same weights as one never stopped: the
    checkpoint carries the random states (the RoI sampler's and the augmentations' draws), and the resumed run restores
    them, then validates at iteration 4 again as the other did there (a validation draws from torch's generator).
    Without the states the losses part at the first iteration after the resume; without the validation, from the
    second. TSD w/o PC, so that the derived proposals' path is in it too."""
    options = ["--dataset", SMOKE_DATASET, "--max-iters", "8", "--val-interval", "4",
               "--cfg-options", "default_hooks.checkpoint.max_keep_ckpts=-1"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    trained = run_cli("train", "cpu/tsd_nopc", *options, "--work-dir", str(whole))
    assert trained.returncode == 0, trained.stderr[-3000:]
    stopped.mkdir()
    (stopped / "iter_4.pth").write_bytes((whole / "iter_4.pth").read_bytes())
    (stopped / "last_checkpoint").write_text(str(stopped / "iter_4.pth"))
    resumed = run_cli("train", "cpu/tsd_nopc", *options, "--work-dir", str(stopped), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ends = [torch.load(work_dir / "iter_8.pth", weights_only=True)["state_dict"] for work_dir in (whole, stopped)]
    assert [name for name, weights in ends[0].items() if not torch.equal(weights, ends[1][name])] == []
