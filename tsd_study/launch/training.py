"""The training job of one run: train (resuming from the last checkpoint), evaluate on val, write metrics.json.

The executors submit ``TrainJob()(run_dir)`` (tsd_study.launch.train_job), which calls ``train_and_evaluate`` in the
job process; everything a job needs is in its run directory and its environment (job_environment). This is the one
module of the study engine (runs/, launch/) that builds mmengine Runners.
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import submitit
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from tsd_study.atomic import write_bytes_atomic, write_json_atomic
from tsd_study.bench.latency import measure_latency
from tsd_study.config_loading import RECIPE_DIGEST_KEY, ConfigError, load_config
from tsd_study.data.catalog import config_list
from tsd_study.metrics import IOU_TYPES, evaluate_coco
from tsd_study.models.derived_proposals import dump_derived_proposals
from tsd_study.models.offset_health import HEALTH_INFO_KEY, OffsetHealthHook
from tsd_study.models.tsd_roi_head import TSDRoIHead
from tsd_study.output import line_buffered_output
from tsd_study.random_state import RandomStateHook
from tsd_study.runs.manifest import build_manifest
from tsd_study.runs.store import LOG_TAIL_LINES, Attempt, RunDir, RunState, RunStatus, latest_checkpoint, now

from .job_environment import FAILED, FINISHED, THREADS_VARIABLE, TRAIN, JobContext, TaskGate

LATENCY_IMAGES = 30
LATENCY_WARMUP = 5
DERIVED_PROPOSAL_IMAGES = 4
PREDICTIONS_PREFIX = "predictions"
MASTER_PORT_BASE = 10000  # distributed jobs pick MASTER_PORT_BASE + SLURM job id % MASTER_PORT_RANGE: below Linux's
MASTER_PORT_RANGE = 20000  # ephemeral ports (32768 and up), so no outgoing connection holds the port by chance

def train_and_evaluate(run_dir: Path | str, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train and evaluate the run in ``run_dir`` unless it is finished; returns its metrics.json content.

    The run's lock is held throughout, so a second process given the same run waits, then returns the metrics the
    first one wrote. In a distributed job task 0 takes the lock and keeps the books; the other tasks wait for its word
    (TaskGate) before they build anything, so none of them can time out while task 0 waits for the lock. Training
    resumes from the newest complete checkpoint in ``work/``. On failure the status records the exception and the
    log tail, and the exception propagates. ``hooks`` are registered on the training Runner beside the run's own.
    """
    run = RunDir(run_dir)
    context = JobContext.current()
    _limit_threads()
    line_buffered_output()
    if not context.is_main:  # task 0 keeps the books; the others train alongside it once it says so
        finished = run.metrics()
        if finished is None and TaskGate.of(run.path, context).wait() == TRAIN:
            return _train_and_evaluate(run, context, hooks)
        return finished or run.metrics() or {}
    gate = TaskGate.of(run.path, context) if context.num_tasks > 1 else None
    with _training_lock(run, gate):
        try:
            finished = run.metrics()
            if finished is not None:
                _announce(gate, FINISHED)
                return finished
            _start_attempt(run, context)
        except BaseException:
            _announce(gate, FAILED)
            raise
        _announce(gate, TRAIN)
        try:
            metrics = _train_and_evaluate(run, context, hooks)
        except Exception as error:
            _record_failure(run, error)
            raise
        if gate is not None:  # every task trained, so every task has passed it
            gate.path.unlink(missing_ok=True)
        _finish(run, metrics)
        return metrics


@contextmanager
def _training_lock(run: RunDir, gate: TaskGate | None) -> Iterator[None]:
    """Hold the run's lock; in a distributed job, task 0 beats ``gate`` while it waits for it."""
    lock = run.training_lock()
    if gate is None:
        lock.acquire()
    else:
        gate.acquire(lock)
    try:
        yield
    finally:
        lock.release()


def _announce(gate: TaskGate | None, word: str) -> None:
    if gate is not None:
        gate.announce(word)


def _limit_threads() -> None:
    threads = os.environ.get(THREADS_VARIABLE)
    if threads:
        torch.set_num_threads(int(threads))


def _device() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _start_attempt(run: RunDir, context: JobContext) -> None:
    """Mark the run running with a new attempt (closing one a killed process left open) and write its manifest."""
    _, start_iter = latest_checkpoint(run.work_dir)
    started_at = now()

    def running(status: RunStatus) -> None:
        status.end_attempt(RunState.INTERRUPTED)
        status.state, status.error, status.log_tail = RunState.RUNNING, None, None
        status.attempts.append(Attempt(started_at=started_at, executor=context.executor, job_id=context.job_id,
                                       host=socket.gethostname(), start_iter=start_iter))

    checkpoint_recipe = run.trained_recipe() if start_iter else None  # the recipe the checkpoint was trained from
    run.update_status(running)
    run.write_manifest(build_manifest(run.spec(), executor=context.executor, job_id=context.job_id,
                                      device=_device(), started_at=started_at, start_iter=start_iter,
                                      recipe_digest=checkpoint_recipe))


def _finish(run: RunDir, metrics: dict[str, Any]) -> None:
    run.write_metrics(metrics)
    manifest = run.manifest() or {}
    run.write_manifest({**manifest, "ended_at": now()})

    def finished(status: RunStatus) -> None:
        status.state = RunState.FINISHED
        status.end_attempt(RunState.FINISHED, end_iter=metrics["iters"])

    run.update_status(finished)


def _record_failure(run: RunDir, error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)).rstrip()
    tail = _log_tail(run)

    def failed(status: RunStatus) -> None:
        status.state, status.error, status.log_tail = RunState.FAILED, text, tail
        status.end_attempt(RunState.FAILED)

    run.update_status(failed)


def _log_tail(run: RunDir) -> list[str]:
    """The last lines of the newest mmengine log of the run, else of this job's stderr (the job failed earlier)."""
    logs = sorted(run.work_dir.glob("*/*.log"), key=lambda path: path.stat().st_mtime)
    if logs:
        log = logs[-1]
    elif os.environ.get("SUBMITIT_EXECUTOR"):
        log = submitit.JobEnvironment().paths.stderr
    else:
        return []
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return lines[-LOG_TAIL_LINES:]


def _train_and_evaluate(run: RunDir, context: JobContext, hooks: Sequence[Hook]) -> dict[str, Any]:
    """metrics.json's content: the final evaluation, the learning curve, latency and parameters.

    The config's validation loop evaluates during training (the learning curve) and at its end (the final
    metrics); train_seconds covers building the Runner and training, eval_seconds every evaluation, the latency
    measurement and Fig. 5's dump.
    """
    cfg = _build_config(run, context)
    _check_recipe(run, cfg, record=context.is_main)
    began = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    curve = LearningCurveHook(run.work_dir, cfg.val_evaluator.ann_file, _iou_types(cfg))
    runner.register_hook(OffsetHealthHook())
    runner.register_hook(RandomStateHook())
    runner.register_hook(curve, priority="LOW")
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    if curve.validated_at != runner.iter:  # resumed after the last validation: every rank validates again
        runner.val_loop.run()
    ended = time.perf_counter()
    if not context.is_main:
        return {}
    metrics = _evaluate(run, cfg, runner, curve)
    eval_seconds = curve.seconds + time.perf_counter() - ended
    return {**metrics, "iters": runner.iter, "train_seconds": ended - began - curve.seconds,
            "eval_seconds": eval_seconds}


def _build_config(run: RunDir, context: JobContext) -> Config:
    """The run's config: seed, work dir in the run, validation predictions written into the work dir."""
    spec = run.spec()
    cfg = load_config(spec.config, dataset=spec.dataset, cfg_options={**spec.overrides, "randomness.seed": spec.seed},
                      work_dir=run.work_dir, max_iters=spec.max_iters)
    cfg.val_evaluator.outfile_prefix = str(run.work_dir / PREDICTIONS_PREFIX)
    cfg.val_evaluator.format_only = True  # each validation writes its predictions; LearningCurveHook scores them
    checkpoint, _ = latest_checkpoint(run.work_dir)
    cfg.resume = checkpoint is not None
    cfg.load_from = str(checkpoint) if checkpoint else None
    if context.num_tasks > 1:
        _prepare_distributed(cfg, context)
    return cfg


def _check_recipe(run: RunDir, cfg: Config, record: bool) -> None:
    """Refuse to resume a checkpoint trained from another version of the config (every task, alike); ``record``
    (task 0) writes the config's recipe digest into the manifest."""
    digest, recorded = cfg[RECIPE_DIGEST_KEY], run.trained_recipe()
    if recorded is not None and recorded != digest:
        raise ConfigError(f"{run.path}: its checkpoint was trained from another version of {run.spec().config} "
                          f"(recipe {recorded}, now {digest}): retrain it from scratch (--retrain-stale)")
    if record:
        run.write_manifest({**(run.manifest() or {}), "recipe_digest": digest})


def _iou_types(cfg: Config) -> tuple[str, ...]:
    return tuple(iou for iou in IOU_TYPES if iou in config_list(cfg.val_evaluator.metric))


def _prepare_distributed(cfg: Config, context: JobContext) -> None:
    """Train with mmengine's SLURM launcher, one process per task (one per GPU at full scale).

    mmengine's launcher pins a CUDA device per task, which CPU-only torch cannot do; on CPU the gloo process group is
    started here from the same SLURM variables, and mmengine finds it initialised. DDP then wraps a CPU model, which
    takes no device ids.
    """
    cfg.launcher = "slurm"
    os.environ.setdefault("MASTER_PORT", str(MASTER_PORT_BASE + int(os.environ["SLURM_JOB_ID"]) % MASTER_PORT_RANGE))
    if torch.cuda.is_available():
        return
    os.environ.update(MASTER_ADDR=context.hostnames[0], RANK=str(context.rank), WORLD_SIZE=str(context.num_tasks),
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))
    torch.distributed.init_process_group(backend="gloo")
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                 find_unused_parameters=cfg.get("find_unused_parameters", False))


def _evaluate(run: RunDir, cfg: Config, runner: Runner, curve: LearningCurveHook) -> dict[str, Any]:
    """The last validation's COCO metrics (area x IoU breakdown included) and predictions, the learning curve, the
    offset health, latency and parameters; TSD models also write Fig. 5's derived proposals of a few val images."""
    metrics: dict[str, Any] = {}
    for iou_type in curve.iou_types:
        written = curve.predictions_file(iou_type)
        write_bytes_atomic(run.predictions_file(iou_type), written.read_bytes())
        written.unlink()
        metrics[iou_type] = curve.final[iou_type]
    metrics["curve"] = curve.points
    if "offset_health" in curve.points[-1]:
        metrics["offset_health"] = curve.points[-1]["offset_health"]
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    metrics["latency_ms"] = _latency(runner, model)
    metrics["params_M"] = sum(parameter.numel() for parameter in model.parameters()) / 1e6
    if isinstance(getattr(model, "roi_head", None), TSDRoIHead):
        dataset = runner.val_dataloader.dataset
        batches = (pseudo_collate([dataset[index]]) for index in range(len(dataset)))
        dump_derived_proposals(model, batches, run.derived_proposals_file, num_images=DERIVED_PROPOSAL_IMAGES,
                               classes=tuple(dataset.metainfo["classes"]))
    return metrics


def _latency(runner: Runner, model: torch.nn.Module) -> float:
    """Median ms per image over LATENCY_IMAGES val images one at a time (the split is cycled if smaller).

    Images come straight from the test dataset: no sampler, so no collective call in a distributed job.
    """
    dataset = runner.val_dataloader.dataset
    batches = (pseudo_collate([dataset[index % len(dataset)]]) for index in range(LATENCY_WARMUP + LATENCY_IMAGES))
    return measure_latency(model, batches, num_images=LATENCY_IMAGES, warmup=LATENCY_WARMUP)


class LearningCurveHook(Hook):
    """Scores every validation of a run (the predictions its format-only evaluator wrote) with the area x IoU
    breakdown, and keeps the learning curve: one point per validation with the iteration, AP, AP50 and AP75 (and
    the mask APs), and the offset health :class:`OffsetHealthHook` measured. The curve is saved in the work dir after
    each point, so a resumed run keeps the points before its checkpoint.

    Attributes:
        points: the curve so far, in iteration order.
        final: the last validation's full evaluation (``CocoEvaluation.to_json()``) per IoU type (main process).
        validated_at: the iteration of this process's last validation (None before one), the same on every rank.
        seconds: wall seconds spent in validations by this process.
    """

    priority = "LOW"  # after OffsetHealthHook (NORMAL) has summarised the epoch
    CURVE_FILE = "curve.json"
    CURVE_METRICS = ("AP", "AP50", "AP75")

    def __init__(self, work_dir: Path, ann_file: str, iou_types: tuple[str, ...]) -> None:
        self.work_dir, self.ann_file, self.iou_types = Path(work_dir), Path(ann_file), iou_types
        self.points: list[dict[str, Any]] = []
        self.final: dict[str, dict] = {}
        self.validated_at: int | None = None
        self.seconds = 0.0
        self._began = 0.0

    def predictions_file(self, iou_type: str) -> Path:
        return self.work_dir / f"{PREDICTIONS_PREFIX}.{iou_type}.json"

    def before_train(self, runner: Runner) -> None:
        """Keep the saved points up to the resumed iteration (a validation at that iteration is done again:
        RandomStateHook replays it)."""
        saved = self.work_dir / self.CURVE_FILE
        points = json.loads(saved.read_text()) if saved.is_file() else []
        self.points = [point for point in points if point["iter"] <= runner.iter]

    def before_val_epoch(self, runner: Runner) -> None:
        self._began = time.perf_counter()

    def after_val_epoch(self, runner: Runner, metrics: dict | None = None) -> None:
        if is_main_process():
            point: dict[str, Any] = {"iter": runner.iter}
            for iou_type in self.iou_types:
                evaluation = evaluate_coco(self.ann_file, self.predictions_file(iou_type), iou_type).to_json()
                self.final[iou_type] = evaluation
                prefix = "" if iou_type == "bbox" else f"{iou_type}_"
                point.update({f"{prefix}{name}": 100.0 * stat for name, stat in
                              zip(self.CURVE_METRICS, evaluation["stats"][:3])})
            health = runner.message_hub.get_info(HEALTH_INFO_KEY)
            if health:
                point["offset_health"] = health
                runner.message_hub.update_info(HEALTH_INFO_KEY, None)
            self.points = [old for old in self.points if old["iter"] < point["iter"]] + [point]
            write_json_atomic(self.work_dir / self.CURVE_FILE, self.points, indent=1)
        self.validated_at = runner.iter
        self.seconds += time.perf_counter() - self._began
