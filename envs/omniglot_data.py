"""Omniglot on disk: the official archives, their checksums, download, and a cached uint8 tensor.

The official archives (https://github.com/brendenlake/omniglot, MIT licence) hold one folder per alphabet,
one sub-folder per character, and 20 PNG drawings (105 x 105, black ink on white) per character. They are
decoded once with Pillow, resized to 28 x 28 (as in the MAML paper), inverted so that ink is 255 and the
background 0, and cached as one uint8 tensor of shape (characters, 20, 28, 28) with the alphabet and
character names beside it. Episode sampling is then pure tensor indexing.

Where things are looked up:
  data dir   `data_dir` argument, else $METARL_DATA, else <repo>/../shared/data/omniglot
  cache dir  `cache_dir` argument, else $METARL_CACHE/omniglot, else ~/.cache/metarl/omniglot
An archive is either `<name>.zip` or an extracted folder `<name>/` in the data dir.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

IMAGE_SIZE = 28
DRAWINGS_PER_CHARACTER = 20
CACHE_VERSION = 2  # 2: the decoded tensor's checksum stored beside it

#: md5 of the official archives (github.com/brendenlake/omniglot/python); MD5SUMS files in the data dir add to it.
KNOWN_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
    "images_background_small1.zip": "e704a628b5459e08445c13499850abc4",
    "images_background_small2.zip": "b75a71a51d3b13f821f212756fe481fd",
}
DOWNLOAD_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
#: the archives `download_archives` fetches by default (the full dataset: 1623 characters, 50 alphabets)
FULL_ARCHIVES = ("images_background", "images_evaluation")


class ChecksumError(ValueError):
    """An archive whose md5 differs from the expected one (corrupt or truncated download)."""


def default_data_dir() -> Path:
    env = os.environ.get("METARL_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "omniglot"


def default_cache_dir() -> Path:
    env = os.environ.get("METARL_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "metarl"
    return base / "omniglot"


def md5_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_md5sums(data_dir: Path) -> dict[str, str]:
    """Checksums from `MD5SUMS` (md5sum's format: `<hex>  <file name>`) in the data dir, if present."""
    sums: dict[str, str] = {}
    path = data_dir / "MD5SUMS"
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def expected_md5(data_dir: Path, file_name: str) -> str | None:
    return {**KNOWN_MD5, **read_md5sums(data_dir)}.get(file_name)


def verify_md5(path: str | Path, expected: str) -> None:
    actual = md5_of(path)
    if actual != expected.lower():
        raise ChecksumError(f"md5 of {path} is {actual}, expected {expected}: the file is corrupt or incomplete")


def download_archive(name: str, data_dir: str | Path, base_url: str = DOWNLOAD_URL, md5: str | None = None) -> Path:
    """Download `<base_url>/<name>.zip` into the data dir and verify its md5; return the archive's path.

    An archive already there with the right checksum is kept. The download goes to a temporary file that is
    renamed into place only once its checksum matches, so a failed download never leaves a bad archive.
    """
    data_dir = Path(data_dir)
    file_name = f"{name}.zip"
    md5 = md5 or expected_md5(data_dir, file_name)
    if md5 is None:
        raise KeyError(f"no known md5 for {file_name}; known: {', '.join(sorted(KNOWN_MD5))}")
    target = data_dir / file_name
    if target.is_file() and md5_of(target) == md5:
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data_dir, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(f"{base_url.rstrip('/')}/{file_name}") as resp:
            shutil.copyfileobj(resp, out)
        verify_md5(tmp, md5)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def download_archives(data_dir: str | Path, names: Iterable[str] = FULL_ARCHIVES, base_url: str = DOWNLOAD_URL) -> list[Path]:
    return [download_archive(n, data_dir, base_url) for n in names]


def _png_entries_zip(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            parts = info.filename.strip("/").split("/")
            if not info.is_dir() and parts[-1].lower().endswith(".png") and len(parts) >= 3:
                yield parts[-3], parts[-2], parts[-1], zf.read(info)


def _png_entries_dir(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    for png in sorted(path.rglob("*.png")):
        yield png.parent.parent.name, png.parent.name, png.name, png.read_bytes()


def decode_png(data: bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """A drawing as uint8 (size, size) with ink = 255 (the archives store ink as black on white)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L").resize((size, size), resample=Image.LANCZOS)
        return 255 - np.asarray(im, dtype=np.uint8)


def locate_archive(name: str, data_dir: Path) -> tuple[Path, bool]:
    """(path, is_zip) of an archive given by name, preferring the zip (it can be checksummed)."""
    zip_path, folder = data_dir / f"{name}.zip", data_dir / name
    if zip_path.is_file():
        return zip_path, True
    if folder.is_dir():
        return folder, False
    raise FileNotFoundError(
        f"Omniglot archive {name!r} not found in {data_dir} (looked for {zip_path.name} and {folder.name}/); "
        "set $METARL_DATA or the data_dir option, or download the full archives with "
        "envs.omniglot_data.download_archives(data_dir)"
    )


@dataclass
class OmniglotImages:
    """Decoded characters: images (characters, 20, 28, 28) uint8, and each character's alphabet and name."""

    images: torch.Tensor
    alphabets: list[str]
    characters: list[str]
    archives: list[str]

    @property
    def num_characters(self) -> int:
        return self.images.shape[0]


def decode_archive(name: str, data_dir: Path, verify: bool = True) -> OmniglotImages:
    path, is_zip = locate_archive(name, data_dir)
    if is_zip and verify:
        md5 = expected_md5(data_dir, path.name)
        if md5 is None:
            raise ChecksumError(f"no md5 known for {path} (add it to {data_dir / 'MD5SUMS'} or pass verify=False)")
        verify_md5(path, md5)
    groups: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    entries = _png_entries_zip(path) if is_zip else _png_entries_dir(path)
    for alphabet, character, file_name, data in entries:
        groups.setdefault((alphabet, character), []).append((file_name, decode_png(data)))
    keys = sorted(groups)
    for key in keys:
        if len(groups[key]) != DRAWINGS_PER_CHARACTER:
            raise ValueError(f"{path}: {key[0]}/{key[1]} has {len(groups[key])} drawings, expected {DRAWINGS_PER_CHARACTER}")
    if not keys:
        raise ValueError(f"{path} holds no Omniglot drawings (expected <alphabet>/<character>/*.png)")
    images = np.stack([np.stack([img for _, img in sorted(groups[k], key=lambda e: e[0])]) for k in keys])
    return OmniglotImages(torch.from_numpy(images), [k[0] for k in keys], [k[1] for k in keys], [name] * len(keys))


def _source_key(name: str, data_dir: Path) -> str:
    """What the cache of one archive depends on: its checksum (zip) or its file listing (folder)."""
    path, is_zip = locate_archive(name, data_dir)
    if is_zip:
        return md5_of(path)
    h = hashlib.md5()
    for png in sorted(path.rglob("*.png")):
        h.update(f"{png.relative_to(path)}:{png.stat().st_size}".encode())
    return "dir-" + h.hexdigest()


def _tensor_digest(images: torch.Tensor, alphabets, characters) -> str:
    """A checksum of a decoded archive (its pixels and names): what its cache stores to be verified by."""
    h = hashlib.sha256(images.contiguous().numpy().tobytes())
    h.update(repr((tuple(images.shape), list(alphabets), list(characters))).encode())
    return h.hexdigest()


def _read_cache(cache: Path, name: str) -> OmniglotImages | None:
    """The cached archive if its file loads and its checksum verifies; None (with a warning) otherwise."""
    try:
        blob = torch.load(cache, weights_only=True)
        ok = blob["sha256"] == _tensor_digest(blob["images"], blob["alphabets"], blob["characters"])
    except Exception:  # noqa: BLE001 - truncated, foreign or older-format files alike: rebuilt below
        ok = False
    if not ok:
        warnings.warn(f"Omniglot cache {cache} is damaged (it does not verify): rebuilding it from the archive",
                      RuntimeWarning, stacklevel=3)
        return None
    return OmniglotImages(blob["images"], blob["alphabets"], blob["characters"], [name] * len(blob["characters"]))


def load_archive(name: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None, verify: bool = True) -> OmniglotImages:
    """Decoded archive, from the cache when it is there, matches the archive and verifies, else decoded and
    cached (atomically, with a checksum of the decoded tensor)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _source_key(name, data_dir)
    cache = cache_dir / f"{name}-{IMAGE_SIZE}px-v{CACHE_VERSION}-{key[:16]}.pt"
    if cache.is_file():
        cached = _read_cache(cache, name)
        if cached is not None:
            return cached
    data = decode_archive(name, data_dir, verify=verify)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    os.close(fd)
    try:
        torch.save({"images": data.images, "alphabets": data.alphabets, "characters": data.characters,
                    "sha256": _tensor_digest(data.images, data.alphabets, data.characters)}, tmp)
        os.replace(tmp, cache)  # atomic: concurrent readers see the whole file or none
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return data


def load_archives(names: Iterable[str], data_dir: str | Path | None = None, cache_dir: str | Path | None = None, verify: bool = True) -> OmniglotImages:
    """Several archives merged; a character present in more than one (same alphabet and name) is kept once."""
    names = list(names)
    if not names:
        raise ValueError("no Omniglot archives given")
    seen: set[tuple[str, str]] = set()
    images, alphabets, characters, archives = [], [], [], []
    for name in names:
        part = load_archive(name, data_dir, cache_dir, verify)
        keep = [i for i, key in enumerate(zip(part.alphabets, part.characters)) if key not in seen]
        seen.update((part.alphabets[i], part.characters[i]) for i in keep)
        images.append(part.images[keep])
        alphabets += [part.alphabets[i] for i in keep]
        characters += [part.characters[i] for i in keep]
        archives += [name] * len(keep)
    return OmniglotImages(torch.cat(images), alphabets, characters, archives)
