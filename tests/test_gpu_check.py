"""cluster/gpu-check, the prepared GPU check, run here with no CUDA device visible: its CPU steps (the environment
report, the check's configs loaded on shapes:48 and built) must pass, and every GPU step must be skipped and say
why, in the summary file and on the console. On a GPU machine the whole check runs with `make gpu-check`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_STEPS = {"environment", "configs"}
GPU_STEPS = {"mmcv-ops", "pool-parity", "train-tsd_pc", "test-tsd_pc", "train-tsd_pc_r101_dcn",
             "test-tsd_pc_r101_dcn", "bench-head", "bench-pool"}
EXIT_INCOMPLETE = 3


def test_without_a_gpu_the_cpu_steps_pass_and_every_gpu_step_says_why_it_was_skipped(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # as on a CPU machine, also where a GPU is present
    answer = subprocess.run([sys.executable, str(ROOT / "cluster" / "gpu-check"), "--out", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert answer.returncode == EXIT_INCOMPLETE, answer.stdout + answer.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {step["name"]: step for step in summary["steps"]}
    assert set(steps) == CPU_STEPS | GPU_STEPS
    assert {name for name, step in steps.items() if step["status"] == "passed"} == CPU_STEPS, summary
    assert summary["counts"] == {"passed": len(CPU_STEPS), "failed": 0, "skipped": len(GPU_STEPS)}
    for name in GPU_STEPS:
        assert steps[name]["status"] == "skipped"
        assert steps[name]["reason"].startswith("no CUDA device"), steps[name]
        assert f"skipped {name}: no CUDA device" in answer.stdout
    assert steps["environment"]["details"]["cuda_available"] is False
    built = steps["configs"]["details"]
    assert built["tsd_pc"]["backbone_norm"] == built["tsd_pc_r101_dcn"]["backbone_norm"] == "SyncBN"
    assert (built["tsd_pc"]["dcn"], built["tsd_pc_r101_dcn"]["dcn"]) == (False, True)
    assert {model["train_loop"] for model in built.values()} == {"IterBasedTrainLoop"}
    assert (tmp_path / "logs" / "configs.log").is_file()
