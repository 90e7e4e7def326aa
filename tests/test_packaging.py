"""The source distribution holds every build input and no build output; the metadata says
what the package needs."""

import email
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import fastcredit

ROOT = Path(__file__).resolve().parent.parent
# Tracked files that building, testing and reading about fastcredit do not need.
NOT_SHIPPED = (".ci/", "benchmarks/", ".gitignore")
# What a built tree holds besides its sources; none of it may reach the sdist.
BUILD_OUTPUTS = (
    "fastcredit/_C.cpython-311-x86_64-linux-gnu.so",
    "fastcredit/_build_info.py",
    "fastcredit/__pycache__/ops.cpython-311.pyc",
    "tests/__pycache__/conftest.cpython-311-pytest-8.4.0.pyc",
    "csrc/cpu/lra.o",
    "build/temp.linux-x86_64-cpython-311/csrc/ops.o",
)


def _tracked_files() -> list[str]:
    """Files git tracks or would track (new, not ignored): a header added but not yet
    committed is checked too."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (e.g. an unpacked sdist)")
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return listing.split("\0")[:-1]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tarfile.TarFile:
    """The sdist of a copy of the tracked files, built after planting build outputs in it."""
    tree = tmp_path_factory.mktemp("tree")
    for name in _tracked_files():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    for name in BUILD_OUTPUTS:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(b"built")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir",
                    str(dist), str(tree)], capture_output=True, check=True)
    (archive,) = dist.glob("fastcredit-*.tar.gz")
    with tarfile.open(archive) as sdist:
        yield sdist


def _shipped(sdist: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The sdist's files by path inside its top directory."""
    return {member.name.split("/", 1)[1]: member for member in sdist.getmembers()
            if member.isfile()}


def test_sdist_holds_every_tracked_build_input_and_nothing_else(sdist):
    shipped = {name for name in _shipped(sdist)
               if name not in ("PKG-INFO", "setup.cfg")
               and not name.startswith("fastcredit.egg-info/")}
    expected = {name for name in _tracked_files() if not name.startswith(NOT_SHIPPED)}
    assert sorted(expected - shipped) == [], "tracked files missing from the sdist"
    assert sorted(shipped - expected) == [], "untracked files (build outputs?) in the sdist"


def test_sdist_metadata_has_spdx_license_and_this_version(sdist):
    files = _shipped(sdist)
    metadata = email.message_from_bytes(sdist.extractfile(files["PKG-INFO"]).read())
    assert metadata["Version"] == fastcredit.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert "MIT License" in sdist.extractfile(files["LICENSE"]).read().decode()


def test_installed_package_requires_only_the_torch_release_it_was_built_against():
    torch_release = ".".join(fastcredit.build_info()["torch_version"].split(".")[:2])
    requirements = importlib.metadata.requires("fastcredit")
    assert [r for r in requirements if "extra ==" not in r] == [f"torch=={torch_release}.*"]


def test_version_has_one_source():
    assert importlib.metadata.version("fastcredit") == fastcredit.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"\n## [{fastcredit.__version__}]" in changelog
