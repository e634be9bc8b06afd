"""The ``tsd-study`` command. Each subcommand parses its arguments and calls one library function."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from tsd_study.output import line_buffered_output
from tsd_study.runs.plan import DEFAULT_SEEDS

# mmengine imports pkg_resources, which setuptools deprecates; the warning says nothing actionable to our users.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

Handler = Callable[[argparse.Namespace], int]
STORE_HELP = "run store directory (default: $TSD_STUDY_STORE, else runs/ at the project root)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tsd-study`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    line_buffered_output()
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:  # our input errors: what is wrong, no traceback
        print(f"tsd-study: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsd-study", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(commands)
    _add_train_test(commands)
    _add_eval(commands)
    _add_params(commands)
    _add_bench(commands)
    _add_study(commands)
    _add_reproduce(commands)
    _add_weights(commands)
    return parser


def _command(commands, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=handler)
    return sub


def _add_data(commands) -> None:
    data = commands.add_parser("data", help="generate, convert and check datasets").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    shapes = _command(data, "shapes", _data_shapes, "generate the synthetic shapes dataset (COCO json with masks)")
    shapes.add_argument("--out", type=Path, required=True, help="output directory")
    shapes.add_argument("--images", type=int, required=True, help="number of images, train and val together")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--size", type=int, default=160, help="image side in pixels")
    voc = _command(data, "voc2coco", _data_voc2coco, "convert Pascal VOC xml to a COCO-format dataset")
    voc.add_argument("--xml", type=Path, required=True, help="directory of VOC xml files")
    voc.add_argument("--images", type=Path, required=True, help="directory of the images the xml files name")
    voc.add_argument("--out", type=Path, required=True, help="output directory (train.json, val.json, dataset.json)")
    voc.add_argument("--val-fraction", type=float, default=0.2)
    voc.add_argument("--seed", type=int, default=0)
    check = _command(data, "check", _data_check, "check a dataset (shapes[:N[:SEED]], coco2017[:ROOT] or a directory) "
                     "and record the passed check, which later config loads read instead of checking again")
    check.add_argument("dataset")


def _add_train_test(commands) -> None:
    from mmengine.config import DictAction

    for name, handler, help in (("train", _train, "train a config with mmengine's Runner"),
                                ("test", _test, "evaluate a checkpoint on the config's test split")):
        sub = _command(commands, name, handler, help)
        sub.add_argument("config", help="a config file, or a packaged name such as cpu/tsd_pc")
        if name == "test":
            sub.add_argument("checkpoint", type=Path)
        sub.add_argument("--work-dir", type=Path)
        sub.add_argument("--dataset", help="dataset reference, overriding the config's tsd_dataset")
        sub.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                         help="config overrides, key=value (mmengine syntax)")
        if name == "train":
            sub.add_argument("--max-iters", type=int, help="rescale an iteration-based schedule to this length")
            sub.add_argument("--val-interval", type=int,
                             help="evaluate on val every this many iterations (default: the config's, at least once "
                                  "at the end), e.g. for a finer learning curve")
            sub.add_argument("--resume", action="store_true", help="continue from the work dir's last checkpoint")


def _add_eval(commands) -> None:
    sub = _command(commands, "eval-coco", _eval_coco,
                   "COCO metrics of a detection file, with AP by area at every IoU threshold")
    sub.add_argument("gt", type=Path, help="ground-truth COCO json")
    sub.add_argument("detections", type=Path, help="detections json (COCO results format)")
    sub.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox")
    sub.add_argument("--json", action="store_true", help='print {"stats": [...], "breakdown": [...]}')


def _add_params(commands) -> None:
    sub = _command(commands, "params", _params,
                   "parameter counts (millions) of a study's full-scale models beside the paper's")
    sub.add_argument("study", help="a study with a params_M column, e.g. table1")
    sub.add_argument("--profile", default="full", choices=("full", "cpu"))


def _add_bench(commands) -> None:
    from mmengine.config import DictAction

    bench = commands.add_parser("bench", help="speed benchmarks that print measured ratios").add_subparsers(
        dest="bench_command", required=True, metavar="BENCH")
    pool = _command(bench, "pool", _bench_pool,
                    "forward+backward of our pointwise deformable RoI pooling over mmcv's RoIAlign")
    pool.add_argument("--num-rois", type=int, default=512, help="RoIs per image")
    pool.add_argument("--channels", type=int, default=256)
    pool.add_argument("--output-size", type=int, default=7)
    pool.add_argument("--sampling-ratio", type=int, default=4)
    pool.add_argument("--repeats", type=int, default=5)
    pool.add_argument("--device", default="cpu")
    head = _command(bench, "head", _bench_head,
                    "inference (forward + NMS) and training-step time of TSD + PC over the sibling baseline")
    head.add_argument("--baseline", default="full/faster_rcnn", help="baseline config")
    head.add_argument("--tsd", default="full/tsd_pc", help="TSD config")
    head.add_argument("--height", type=int, default=800)
    head.add_argument("--width", type=int, default=1216)
    head.add_argument("--images", type=int, default=10, help="timed inference images")
    head.add_argument("--train-steps", type=int, default=4)
    head.add_argument("--device", default="cpu")
    step = _command(bench, "step", _bench_step,
                    "where a CPU training step goes (data, forward+backward, optimizer), before and after a change")
    step.add_argument("configs", nargs="*", default=["cpu/faster_rcnn", "cpu/tsd_pc"], help="packaged configs")
    step.add_argument("--after", nargs="+", action=DictAction, default={},
                      help="the change, as config overrides key=value (mmengine syntax)")
    step.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    step.add_argument("--dataset", help="dataset reference (default: the config's)")
    plan = _command(bench, "plan", _bench_plan,
                    "`study plan --profile full` on a generated COCO-sized dataset, before and after the dataset "
                    "check records")
    plan.add_argument("--scale", type=float, default=1.0,
                      help="size of the generated files relative to COCO 2017's (1: train2017's 118287 images and "
                           "860001 annotations, about 450 MB)")
    plan.add_argument("--studies", nargs="+", default=["all"], metavar="NAME",
                      help="the studies planned (default: all)")
    plan.add_argument("--out", type=Path, help="generate into this folder and keep it (default: a temporary one)")


def _add_study(commands) -> None:
    from tsd_study.studies.profiles import PROFILES

    study = commands.add_parser("study", help="plan, run and follow the paper's studies").add_subparsers(
        dest="study_command", required=True, metavar="STUDY_COMMAND")
    _command(study, "list", _study_list, "the studies, their rows and the profiles that train them")
    plan = _command(study, "plan", _study_plan, "the distinct runs studies need, shared runs, what exists already")
    run = _command(study, "run", _study_run, "train and evaluate every run studies need that is not finished")
    for sub in (plan, run):
        sub.add_argument("studies", nargs="+", metavar="NAME", help="study names (e.g. table2) or 'all'")
        sub.add_argument("--profile", required=True, choices=list(PROFILES))
        sub.add_argument("--seeds", type=_seeds, default=DEFAULT_SEEDS,
                         help="comma-separated seeds (default: 0,1,2)")
        sub.add_argument("--store", type=Path, help=STORE_HELP)
    run.add_argument("--executor", choices=("local", "slurm"), default="local")
    run.add_argument("--site", help="SLURM site profile: a name under cluster/sites/ or a yaml file (slurm executor "
                                   "only)")
    run.add_argument("--max-concurrent", type=int,
                     help="jobs at a time (default: the CPU count locally, the site's max_concurrent on SLURM)")
    run.add_argument("--force", action="store_true", help="retrain finished runs from scratch")
    _add_retrain_stale(run)
    run.add_argument("--profile-overhead", action="store_true",
                     help="print the share of wall time spent outside training and evaluation")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    status = _command(study, "status", _study_status, "one line per run of the store: state, rows, metrics")
    status.add_argument("--store", type=Path, help=STORE_HELP)
    _add_study_collect(study)


def _add_study_collect(study) -> None:
    from tsd_study.studies.profiles import PROFILES

    collect = _command(study, "collect", _study_collect,
                       "a study's table from the run store: ours (mean, t-interval over seeds), the paper's, the gap")
    collect.add_argument("study", metavar="NAME", help="a study name, e.g. table1")
    collect.add_argument("--profile", default="cpu", choices=list(PROFILES))
    collect.add_argument("--seeds", type=_seeds, default=DEFAULT_SEEDS,
                         help="comma-separated seeds (default: 0,1,2)")
    collect.add_argument("--store", type=Path, help=STORE_HELP)
    collect.add_argument("--csv", type=Path, help="also write the long table (one line per row and metric) here")


def _add_reproduce(commands) -> None:
    from tsd_study.studies.profiles import PROFILES

    reproduce = _command(commands, "reproduce", _reproduce,
                         "train every study of a profile, run its notebooks and render results/<profile>/")
    reproduce.add_argument("--profile", default="cpu", choices=list(PROFILES))
    reproduce.add_argument("--executor", choices=("local", "slurm"), default="local")
    reproduce.add_argument("--site", help="SLURM site profile: a name under cluster/sites/ or a yaml file (slurm "
                                         "executor only)")
    reproduce.add_argument("--only", type=lambda text: text.split(","), metavar="NAME,...",
                           help="only these notebooks (e.g. table1,table9), or 'all' for every one, also those the "
                                "profile leaves out by default; skips the overview")
    reproduce.add_argument("--seeds", type=_seeds, default=DEFAULT_SEEDS,
                         help="comma-separated seeds (default: 0,1,2)")
    reproduce.add_argument("--store", type=Path, help=STORE_HELP)
    reproduce.add_argument("--out", type=Path, help="report directory (default: results/<profile>)")
    reproduce.add_argument("--max-concurrent", type=int, help="jobs at a time (default: the executor's)")
    reproduce.add_argument("--no-launch", action="store_true",
                           help="launch nothing: report the runs the store already holds (the others show as "
                                "pending or missing)")
    reproduce.add_argument("--no-pages", dest="pages", action="store_false",
                           help="executed notebooks and CSV tables only: no HTML pages, index or figure files")
    _add_retrain_stale(reproduce)


def _add_retrain_stale(command) -> None:
    command.add_argument("--retrain-stale", action="store_true",
                         help="retrain from scratch the runs whose config has changed since they trained (without "
                              "it, such runs stop the command before anything is launched)")


def _add_weights(commands) -> None:
    from tsd_study.studies.profiles import PROFILES
    from tsd_study.weights import WEIGHTS_VARIABLE

    weights = commands.add_parser("weights", help="the pretrained checkpoints configs initialise from").add_subparsers(
        dest="weights_command", required=True, metavar="WEIGHTS_COMMAND")
    fetch = _command(weights, "fetch", _weights_fetch,
                     f"download every checkpoint the chosen configs initialise from into the weights cache "
                     f"(${WEIGHTS_VARIABLE}), which jobs then read instead of the network")
    fetch.add_argument("--profile", default="full", choices=list(PROFILES),
                       help="the profile's configs (default: full)")
    fetch.add_argument("--only", nargs="+", metavar="NAME",
                       help="only these studies' configs (default: every study's), e.g. table1 table5 or table1,table5")
    fetch.add_argument("--config", nargs="+", metavar="CONFIG",
                       help="these configs instead of studies' (files, or packaged names such as full/tsd_pc_r101)")
    fetch.add_argument("--dir", type=Path, help=f"the weights cache (default: ${WEIGHTS_VARIABLE})")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(seed) for seed in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None


def _study_names(names: list[str]) -> list[str]:
    from tsd_study.studies import study_names

    return study_names() if names == ["all"] else names


def _data_shapes(args: argparse.Namespace) -> int:
    from tsd_study.data import check_dataset, generate_shapes

    spec = generate_shapes(args.out, args.images, args.seed, image_size=args.size)
    _print_summaries(check_dataset(spec))
    return 0


def _data_voc2coco(args: argparse.Namespace) -> int:
    from tsd_study.data import check_dataset, voc_to_coco

    spec = voc_to_coco(args.xml, args.images, args.out, val_fraction=args.val_fraction, seed=args.seed)
    _print_summaries(check_dataset(spec))
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from tsd_study.data import checked_dataset

    _print_summaries(checked_dataset(args.dataset, recheck=True)[1])
    return 0


def _print_summaries(summaries: dict) -> None:
    for split, summary in summaries.items():
        print(f"{split}: {summary}")


def _train(args: argparse.Namespace) -> int:
    from tsd_study import runner
    from tsd_study.config_loading import load_config

    cfg = load_config(args.config, dataset=args.dataset, cfg_options=args.cfg_options, work_dir=args.work_dir,
                      max_iters=args.max_iters)
    if args.val_interval is not None:
        cfg.train_cfg.val_interval = args.val_interval
    runner.train(cfg, resume=args.resume)
    return 0


def _test(args: argparse.Namespace) -> int:
    from tsd_study import runner
    from tsd_study.config_loading import load_config

    cfg = load_config(args.config, dataset=args.dataset, cfg_options=args.cfg_options, work_dir=args.work_dir)
    metrics = runner.test(cfg, args.checkpoint)
    print(json.dumps(metrics))  # the last line of stdout, after mmengine's log
    return 0


def _eval_coco(args: argparse.Namespace) -> int:
    from tsd_study.metrics import evaluate_coco, format_report

    evaluation = evaluate_coco(args.gt, args.detections, iou_type=args.iou_type)
    print(json.dumps(evaluation.to_json()) if args.json else format_report(evaluation))
    return 0


def _params(args: argparse.Namespace) -> int:
    from tsd_study.bench.params import params_table

    print(params_table(args.study, args.profile).to_csv(index=False, float_format="%.1f"), end="")
    return 0


def _bench_pool(args: argparse.Namespace) -> int:
    from tsd_study.bench.pool import bench_pool

    bench_pool(num_rois=args.num_rois, channels=args.channels, output_size=args.output_size,
               sampling_ratio=args.sampling_ratio, repeats=args.repeats, device=args.device)
    return 0


def _study_list(args: argparse.Namespace) -> int:
    from tsd_study.runs.listing import format_studies

    print(format_studies())
    return 0


def _study_plan(args: argparse.Namespace) -> int:
    from tsd_study.runs import RunStore, plan
    from tsd_study.runs.listing import format_plan

    print(format_plan(plan(_study_names(args.studies), args.profile, args.seeds), RunStore(args.store)))
    return 0


def _study_run(args: argparse.Namespace) -> int:
    import time
    from datetime import datetime, timezone

    from tsd_study.launch.overhead import measure_overhead
    from tsd_study.launch.request import StudyRequest, run_study
    from tsd_study.runs.listing import format_outcome

    request = StudyRequest.from_args(args)
    started, began = datetime.now(timezone.utc), time.perf_counter()
    launched = run_study(request, _study_names(args.studies), progress=args.progress, show_runs=True)
    wall_seconds = time.perf_counter() - began
    store = request.run_store
    print(format_outcome(store, launched.states))
    if args.profile_overhead:
        run_dirs = [store.run(run_id) for run_id in launched.states]
        print(measure_overhead(run_dirs, started, wall_seconds, launched.max_concurrent).describe())
    return 1 if launched.unfinished else 0


def _study_status(args: argparse.Namespace) -> int:
    from tsd_study.runs import RunStore
    from tsd_study.runs.listing import format_status

    print(format_status(RunStore(args.store)))
    return 0


def _study_collect(args: argparse.Namespace) -> int:
    import pandas as pd

    from tsd_study.atomic import write_text_atomic
    from tsd_study.report import collect

    results = collect(args.study, args.profile, args.seeds, args.store)
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", None):
        print(results.display_table().to_string())
    for (row, seed), error in results.errors().items():
        print(f"{row} seed {seed} failed: {error.strip().splitlines()[-1]}")
    if args.csv:
        write_text_atomic(args.csv, results.table().to_csv(index=False))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from tsd_study.launch.request import StudyRequest
    from tsd_study.report.reproduce import reproduce

    outcome = reproduce(StudyRequest.from_args(args), only=args.only, out=args.out, pages=args.pages)
    print(f"report: {outcome.out / 'index.html' if args.pages else outcome.out}")
    for name, error in outcome.failed_notebooks.items():
        print(f"notebook {name} raised {error}", file=sys.stderr)
    if outcome.unfinished_runs:
        print(f"{len(outcome.unfinished_runs)} run(s) did not finish: see `tsd-study study status`", file=sys.stderr)
    return 0 if outcome.ok else 1


def _weights_fetch(args: argparse.Namespace) -> int:
    from tsd_study.runs.plan import study_configs
    from tsd_study.weights import WEIGHTS_VARIABLE, WeightsError, weights_dir
    from tsd_study.weights_fetch import fetch_weights

    directory = args.dir or weights_dir()
    if directory is None:
        raise WeightsError(f"weights fetch: no weights cache: set ${WEIGHTS_VARIABLE} to a folder the jobs can read "
                           f"(on a cluster, one on the shared file system), or pass --dir")
    only = [name for text in args.only or ["all"] for name in text.split(",")]
    configs = [(config, {}) for config in args.config] if args.config else study_configs(_study_names(only),
                                                                                         args.profile)
    fetched = fetch_weights(configs, directory)
    print(f"{fetched} checkpoint(s) ready in {directory}; jobs read them when ${WEIGHTS_VARIABLE}={directory} is set "
          f"in their environment" if fetched else "the chosen configs name no checkpoint file: nothing to download")
    return 0


def _bench_step(args: argparse.Namespace) -> int:
    from tsd_study.bench.step import bench_step

    bench_step(tuple(args.configs), after=args.after, steps=args.steps, dataset=args.dataset)
    return 0


def _bench_plan(args: argparse.Namespace) -> int:
    from tsd_study.bench.plan import bench_plan

    bench_plan(scale=args.scale, studies=tuple(args.studies), out=args.out)
    return 0


def _bench_head(args: argparse.Namespace) -> int:
    from tsd_study.bench.head import bench_head

    bench_head(baseline=args.baseline, tsd=args.tsd, height=args.height, width=args.width, num_images=args.images,
               train_steps=args.train_steps, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
