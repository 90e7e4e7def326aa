"""The package's shape: the oracle stays outside the product, the library stays outside the
application, and the application builds DFA models through convert()."""

import ast
import pathlib
import subprocess
import sys

import torch
from torch import nn

import fastcredit
from fastcredit.app import train

PACKAGE = pathlib.Path(fastcredit.__file__).parent


def _imports(path: pathlib.Path) -> set[str]:
    """Absolute names of the modules that ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_product_module_imports_the_oracle():
    offenders = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if path.name != "reference.py" and "fastcredit.reference" in _imports(path))
    assert offenders == []


def test_the_library_never_imports_the_application():
    offenders = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in ("app", "__main__.py")  # the command
        and any(name == "fastcredit.app" or name.startswith("fastcredit.app.")
                for name in _imports(path)))
    assert offenders == []


def test_import_needs_neither_matplotlib_nor_datasets_nor_the_oracle():
    code = ("import sys, fastcredit; "
            "print(sorted(m for m in ('matplotlib', 'fastcredit.app', 'fastcredit.app.data', "
            "'fastcredit.reference') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"


def test_the_guard_sees_an_import_of_the_oracle(tmp_path, monkeypatch):
    planted = PACKAGE / "nn" / "fa" / "layers.py"
    assert "fastcredit.reference" not in _imports(planted)
    fake = tmp_path / "fastcredit" / "nn" / "fa"
    fake.mkdir(parents=True)
    (fake / "layers.py").write_text("from ... import reference\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "fastcredit")
    assert "fastcredit.reference" in _imports(fake / "layers.py")


def _tree(model: nn.Module) -> list[tuple[str, str]]:
    return [(name, type(module).__name__) for name, module in model.named_modules()]


def test_train_builds_dfa_models_with_convert():
    for model_name, shape in (("mlp", (8, 8)), ("lenet", (16, 16)), ("convnet", (8, 8))):
        config = train.TrainConfig(method="dfa", model=model_name)
        torch.manual_seed(0)
        built = train.build_model(config, shape, 10)
        torch.manual_seed(0)
        plain = train.build_model(train.TrainConfig(method="bp", model=model_name), shape, 10)
        converted = fastcredit.convert(plain, "dfa")
        assert _tree(built) == _tree(converted)
        assert built.state_dict().keys() == converted.state_dict().keys()
        for key, value in built.state_dict().items():
            assert torch.equal(value, converted.state_dict()[key]), key


def test_old_homes_of_moved_modules_still_work_and_warn():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fastcredit.data.load_digits is fastcredit.app.data.load_digits
        from fastcredit.feedback import METHODS
    assert METHODS == ("fa", "usf", "frsf", "brsf", "kp", "bp")
    assert sum(issubclass(w.category, DeprecationWarning) for w in caught) == 2


def test_info_works_without_the_application_extra_and_the_rest_says_what_is_missing():
    # -W ignore: torch warns when numpy is missing
    code = ("import sys; sys.modules['numpy'] = None; sys.modules['matplotlib'] = None\n"
            "from fastcredit.app import cli\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    info = subprocess.run([sys.executable, "-W", "ignore", "-c", code, "info", "--json"],
                          capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert '"version"' in info.stdout
    train_run = subprocess.run([sys.executable, "-W", "ignore", "-c", code, "train"],
                               capture_output=True, text=True)
    assert train_run.returncode == 1
    assert train_run.stderr.startswith("fastcredit train: needs the application's dependencies: "
                                       "pip install 'fastcredit[app]'")
    assert len(train_run.stderr.splitlines()) == 1
