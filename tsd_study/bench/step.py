"""Where a training step of a CPU-profile config goes, and what a change to its config saves, measured side by side.

For each config, two models are built, one as the config has it ("before") and one with the ``after`` overrides
(e.g. ``optim_wrapper.optimizer.foreach=True``), from the same pretrained weights, and they take turns on the same
real training batches (which one goes first alternates), so the machine's load affects both alike. Each step is timed
in three parts: loading the batch (decoding, augmentation, collation: the dataloader the config builds), forward and
backward, and the optimizer step. Prints milliseconds per part and the after/before ratio of the whole step.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

from tsd_study.config_loading import load_config
from tsd_study.runner import build_model

PARTS = ("data", "forward_backward", "optimizer")
VARIANTS = ("before", "after")


def _timed(call) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, 1000.0 * (time.perf_counter() - start)


class _Trainer:
    """A model, its optimizer and its own dataloader, built from one config."""

    def __init__(self, config: str, options: Mapping[str, Any], dataset: str | None) -> None:
        cfg = load_config(config, dataset=dataset, cfg_options=dict(options))
        torch.manual_seed(0)
        self.model = build_model(cfg)
        self.model.init_weights()
        self.model.train()
        self.optim_wrapper = build_optim_wrapper(self.model, cfg.optim_wrapper)
        self.batches: Iterator[dict] = iter(Runner.build_dataloader(cfg.train_dataloader, seed=0))

    def step(self) -> dict[str, float]:
        batch, data_ms = _timed(lambda: next(self.batches))

        def forward_backward() -> None:
            losses = self.model(**self.model.data_preprocessor(batch, True), mode="loss")
            self.model.parse_losses(losses)[0].backward()

        _, forward_backward_ms = _timed(forward_backward)

        def optimizer() -> None:
            self.optim_wrapper.step()
            self.optim_wrapper.zero_grad()

        _, optimizer_ms = _timed(optimizer)
        return {"data": data_ms, "forward_backward": forward_backward_ms, "optimizer": optimizer_ms}


def bench_step(configs: tuple[str, ...] = ("cpu/faster_rcnn", "cpu/tsd_pc"), after: Mapping[str, Any] | None = None,
               steps: int = 20, warmup: int = 3, dataset: str | None = None) -> dict[str, dict]:
    """Median milliseconds per part of a training step, before and after ``after``, for each config; prints a table
    and returns {config: {variant_part: ms, "ratio": after/before of the whole step}}."""
    results: dict[str, dict] = {}
    print(f"threads: {torch.get_num_threads()}; after = {dict(after or {})}; median of {steps} steps, in turns")
    print(f"{'config':22}{'variant':>9}{'data':>9}{'fwd+bwd':>10}{'optim':>9}{'step (ms)':>11}{'ratio':>8}")
    for config in configs:
        trainers = {"before": _Trainer(config, {}, dataset), "after": _Trainer(config, after or {}, dataset)}
        times: dict[str, dict[str, list[float]]] = {variant: {part: [] for part in PARTS} for variant in VARIANTS}
        for index in range(warmup + steps):
            for variant in (VARIANTS if index % 2 == 0 else VARIANTS[::-1]):
                parts = trainers[variant].step()
                if index >= warmup:
                    for part, milliseconds in parts.items():
                        times[variant][part].append(milliseconds)
        result = {}
        for variant in VARIANTS:
            totals = [sum(parts) for parts in zip(*times[variant].values())]
            result |= {f"{variant}_{part}": statistics.median(values) for part, values in times[variant].items()}
            result[f"{variant}_step"] = statistics.median(totals)
        result["ratio"] = result["after_step"] / result["before_step"]
        for variant in VARIANTS:
            ratio = f"{result['ratio']:8.3f}" if variant == "after" else ""
            print(f"{config:22}{variant:>9}{result[f'{variant}_data']:9.1f}{result[f'{variant}_forward_backward']:10.1f}"
                  f"{result[f'{variant}_optimizer']:9.1f}{result[f'{variant}_step']:11.1f}{ratio}")
        results[config] = result
    return results
