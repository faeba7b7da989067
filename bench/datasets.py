"""Benchmark inputs built from ../shared/data: upload-ready zips, cached outside the repository.

Each zip has the ``train/<class>/<file>`` + ``test/<class>/<file>`` layout (the official splits; for the
flowers, which have none, a seeded stratified 80/20 split made here), with directory entries, like
``zip -r`` makes of a folder. Entries are DEFLATED by default, as operating-system zip
tools write them; pictures barely shrink, but the importer has to inflate every entry.

A built zip is cached as ``<cache>/<name>-<limit>-<compression>.zip`` with a ``.json`` beside it (counts),
and reused while both are there.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Compression = Literal["deflated", "stored"]
_METHODS = {"deflated": zipfile.ZIP_DEFLATED, "stored": zipfile.ZIP_STORED}
_DATE = (2026, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same zip
SPLITS = ("train", "test")

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR10_FILES = {"train": "cifar10_train.zip", "test": "cifar10_test.zip"}
FLOWERS_FILE = "tf_flowers_120per_class.zip"
FLOWERS_TEST_FRACTION = 0.2
FLOWERS_SPLIT_SEED = 0
# Fashion-MNIST's label order (its README); "/" cannot be in a folder name.
FASHION_CLASSES = (
    "T-shirt-top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle-boot",
)


class DatasetMissing(Exception):
    """The source files of a dataset are not in the data folder; the benchmark skips it and says so."""


@dataclass(frozen=True)
class BuiltZip:
    name: str
    path: Path
    images: int
    classes: int
    per_split: dict[str, int]
    compression: str
    zip_bytes: int
    limit_per_class: int | None
    cached: bool = False


def mnist_png_zip(
    data_dir: Path, cache_dir: Path, limit_per_class: int | None = None, compression: Compression = "deflated"
) -> BuiltZip:
    """All 70,000 MNIST digits as PNGs (``train/<digit>/<index>.png``, ``test/<digit>/<index>.png``).

    Built from the official idx files in ``<data>/mnist``; `index` is the position in the idx file.
    `limit_per_class` keeps the first N of each digit in each split.
    """
    return _idx_png_zip("mnist-png", data_dir / "mnist", "MNIST", cache_dir, limit_per_class, compression)


def fashion_mnist_png_zip(
    data_dir: Path, cache_dir: Path, limit_per_class: int | None = None, compression: Compression = "deflated"
) -> BuiltZip:
    """All 70,000 Fashion-MNIST pictures as PNGs (``train/Trouser/<index>.png``, ...), from the idx files in
    ``<data>/fashion-mnist``; class folders named after the dataset's labels (FASHION_CLASSES)."""
    return _idx_png_zip(
        "fashion-mnist-png",
        data_dir / "fashion-mnist",
        "Fashion-MNIST",
        cache_dir,
        limit_per_class,
        compression,
        class_names=FASHION_CLASSES,
    )


def _idx_png_zip(
    name: str,
    folder: Path,
    what: str,
    cache_dir: Path,
    limit_per_class: int | None,
    compression: Compression,
    class_names: tuple[str, ...] | None = None,
) -> BuiltZip:
    needed = [folder / file_name for pair in MNIST_FILES.values() for file_name in pair]
    _require(needed, what)

    def entries() -> Iterator[tuple[str, str, bytes]]:
        from PIL import Image

        for split, (images_file, labels_file) in MNIST_FILES.items():
            images = read_idx(folder / images_file)
            labels = read_idx(folder / labels_file)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise ValueError(f"{what} {split}: images {images.shape} and labels {labels.shape} do not match")
            kept: Counter[int] = Counter()
            for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
                number = int(label)
                if limit_per_class is not None and kept[number] >= limit_per_class:
                    continue
                kept[number] += 1
                folder_name = class_names[number] if class_names else str(number)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                yield split, folder_name, f"{split}/{folder_name}/{index}.png", buffer.getvalue()

    return _cached_zip(name, cache_dir, limit_per_class, compression, entries)


def cifar10_zip(
    data_dir: Path, cache_dir: Path, limit_per_class: int | None = None, compression: Compression = "deflated"
) -> BuiltZip:
    """The 60,000 CIFAR-10 JPEGs of ``<data>/cifar10`` in one zip with the ``train/`` + ``test/`` layout.

    The JPEG bytes are copied as they are (no re-encoding); only the zip compression is chosen here.
    """
    folder = data_dir / "cifar10"
    _require([folder / name for name in CIFAR10_FILES.values()], "CIFAR-10")

    def entries() -> Iterator[tuple[str, str, bytes]]:
        for split, file_name in CIFAR10_FILES.items():
            kept: Counter[str] = Counter()
            with zipfile.ZipFile(folder / file_name) as source:
                for info in source.infolist():
                    if info.is_dir():
                        continue
                    label, _, base = info.filename.partition("/")
                    if not base or "/" in base:
                        raise ValueError(f"{file_name}: unexpected entry {info.filename!r} (want <class>/<file>)")
                    if limit_per_class is not None and kept[label] >= limit_per_class:
                        continue
                    kept[label] += 1
                    yield split, label, f"{split}/{label}/{base}", source.read(info)

    return _cached_zip("cifar10-jpeg", cache_dir, limit_per_class, compression, entries)


def flowers_zip(
    data_dir: Path, cache_dir: Path, limit_per_class: int | None = None, compression: Compression = "deflated"
) -> BuiltZip:
    """The 600 flower photos of ``<data>/tf_flowers`` (5 classes), split 80/20 into ``train/`` and ``test/``.

    The source zip has class folders only; the split is `pipelines.zips.stratified_split` (the one the
    importer applies to such zips) with FLOWERS_SPLIT_SEED, made here so that Classifly and the baselines
    train and test on the same pictures. JPEG bytes are copied unchanged. `limit_per_class` keeps the first
    N of each class in each split (after splitting).
    """
    source_path = data_dir / "tf_flowers" / FLOWERS_FILE
    _require([source_path], "flowers")

    def entries() -> Iterator[tuple[str, str, bytes]]:
        from pipelines.zips import stratified_split

        with zipfile.ZipFile(source_path) as source:
            infos = []
            for info in source.infolist():
                if info.is_dir():
                    continue
                label, _, base = info.filename.partition("/")
                if not base or "/" in base:
                    raise ValueError(f"{FLOWERS_FILE}: unexpected entry {info.filename!r} (want <class>/<file>)")
                infos.append((label, base, info))
            splits = stratified_split(
                [label for label, _, _ in infos], test_fraction=FLOWERS_TEST_FRACTION, seed=FLOWERS_SPLIT_SEED
            )
            for wanted in SPLITS:
                kept: Counter[str] = Counter()
                for (label, base, info), split in zip(infos, splits, strict=True):
                    if split != wanted or (limit_per_class is not None and kept[label] >= limit_per_class):
                        continue
                    kept[label] += 1
                    yield split, label, f"{split}/{label}/{base}", source.read(info)

    return _cached_zip("flowers-jpeg", cache_dir, limit_per_class, compression, entries)


# What the import benchmark imports (its targets are for these two).
DATASETS: dict[str, Callable[..., BuiltZip]] = {"mnist": mnist_png_zip, "cifar10": cifar10_zip}
# Every dataset a benchmark may use, by the key the command line and the results use.
ALL_DATASETS: dict[str, Callable[..., BuiltZip]] = {
    "mnist": mnist_png_zip,
    "fashion": fashion_mnist_png_zip,
    "flowers": flowers_zip,
    "cifar10": cifar10_zip,
}


def read_idx(path: Path) -> np.ndarray:
    """A LeCun idx file (gzipped or not) as a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        raw = file.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path.name} is not an idx file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dtype, dims = dtypes[raw[2]], raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path.name}: {data.size} values for the declared shape {shape}")
    return data.reshape(shape)


def _require(paths: list[Path], what: str) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DatasetMissing(
            f"{what} skipped: {', '.join(str(path) for path in missing)} not found "
            "(pass --data DIR or set CLASSIFLY_BENCH_DATA to the shared data folder)"
        )


def _cached_zip(
    name: str,
    cache_dir: Path,
    limit_per_class: int | None,
    compression: Compression,
    entries: Callable[[], Iterator[tuple[str, str, bytes]]],
) -> BuiltZip:
    stem = f"{name}-{'full' if limit_per_class is None else f'{limit_per_class}per-class'}-{compression}"
    path = cache_dir / f"{stem}.zip"
    meta_path = cache_dir / f"{stem}.json"
    if path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("zip_bytes") == path.stat().st_size:
                return BuiltZip(**{**meta, "path": path, "cached": True})
        except (json.JSONDecodeError, TypeError):
            pass
    cache_dir.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    per_split: Counter[str] = Counter()
    classes: set[str] = set()
    folders: set[str] = set()
    method = _METHODS[compression]
    try:
        with zipfile.ZipFile(temp, "w", compression=method) as archive:
            for split, label, arcname, data in entries():
                for folder in (f"{split}/", f"{split}/{label}/"):
                    if folder not in folders:
                        folders.add(folder)
                        directory = zipfile.ZipInfo(folder, date_time=_DATE)
                        directory.external_attr = (0o40755 << 16) | 0x10
                        archive.writestr(directory, b"")
                info = zipfile.ZipInfo(arcname, date_time=_DATE)
                info.compress_type = method
                info.external_attr = 0o100644 << 16
                archive.writestr(info, data)
                per_split[split] += 1
                classes.add(label)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    built = BuiltZip(
        name=name,
        path=path,
        images=sum(per_split.values()),
        classes=len(classes),
        per_split={split: per_split[split] for split in SPLITS},
        compression=compression,
        zip_bytes=path.stat().st_size,
        limit_per_class=limit_per_class,
    )
    meta = {key: value for key, value in asdict(built).items() if key not in ("path", "cached")}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return built
