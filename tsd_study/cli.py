"""The ``tsd-study`` command. Each subcommand parses its arguments and calls one library function."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

# mmengine imports pkg_resources, which setuptools deprecates; the warning says nothing actionable to our users.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tsd-study`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:  # our input errors: say what is wrong, no traceback
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
    check = _command(data, "check", _data_check, "check a dataset (shapes[:N[:SEED]], coco2017[:ROOT] or a directory)")
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
    bench = commands.add_parser("bench", help="speed benchmarks that print measured ratios").add_subparsers(
        dest="bench_command", required=True, metavar="BENCH")
    pool = _command(bench, "pool", _bench_pool,
                    "forward+backward of our pointwise deformable RoI pooling over mmcv's RoIAlign")
    pool.add_argument("--rois", type=int, default=512)
    pool.add_argument("--channels", type=int, default=256)
    pool.add_argument("--repeats", type=int, default=5)
    pool.add_argument("--device", default="cpu")


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
    from tsd_study.data import check_dataset, resolve_dataset

    _print_summaries(check_dataset(resolve_dataset(args.dataset)))
    return 0


def _print_summaries(summaries: dict) -> None:
    for split, summary in summaries.items():
        print(f"{split}: {summary}")


def _train(args: argparse.Namespace) -> int:
    from tsd_study import runner

    cfg = runner.load_config(args.config, dataset=args.dataset, cfg_options=args.cfg_options,
                             work_dir=args.work_dir, max_iters=args.max_iters)
    runner.train(cfg, resume=args.resume)
    return 0


def _test(args: argparse.Namespace) -> int:
    from tsd_study import runner

    cfg = runner.load_config(args.config, dataset=args.dataset, cfg_options=args.cfg_options, work_dir=args.work_dir)
    metrics = runner.test(cfg, args.checkpoint)
    print(json.dumps(metrics, indent=2))
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

    bench_pool(num_rois=args.rois, channels=args.channels, repeats=args.repeats, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
