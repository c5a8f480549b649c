"""The console entry points of pyproject.toml (`mlpl-train`, ...): each names an importable `main` that
answers --help, and every scripts/ wrapper runs the same `main` (the installed package, not scripts/)."""

import importlib
import tomllib
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
ENTRY_POINTS = PYPROJECT["project"]["scripts"]
EXPECTED = {
    "mlpl-train", "mlpl-recipe", "mlpl-pseudo-label", "mlpl-evaluate", "mlpl-publish", "mlpl-build-lm",
    "mlpl-ablations", "mlpl-make-demo-corpus", "mlpl-convert-mctct",
}  # fmt: skip


def test_every_command_has_an_entry_point():
    assert set(ENTRY_POINTS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED - {"mlpl-convert-mctct"}))
def test_entry_point_resolves_to_a_main_that_answers_help(name, capsys):
    module_name, _, function = ENTRY_POINTS[name].partition(":")
    module = importlib.import_module(module_name)
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert module_name.rpartition(".")[0] in packages  # installed, not only importable from a checkout
    with pytest.raises(SystemExit) as exit_info:
        getattr(module, function)(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--config FILE" in help_text and "KEY=VALUE" in help_text  # the one dialect


def test_every_subpackage_of_the_checkout_is_installed_under_its_mlpl_name():
    """pyproject lists packages by name (training/ installs as `mlpl`): a new subpackage must be listed."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {p.parent.relative_to(REPOSITORY / "training") for p in (REPOSITORY / "training").rglob("__init__.py")}
    assert {".".join(("mlpl", *folder.parts)) for folder in folders} <= listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"mlpl": "training"}


def test_scripts_are_thin_wrappers_of_the_entry_points():
    wrapped = {}
    for script in sorted((REPOSITORY / "scripts").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        if "from mlpl.cli." in text:
            wrapped[script.name] = text.split("from mlpl.cli.", 1)[1].split(" ", 1)[0]
    commands = {target.partition(":")[0].removeprefix("mlpl.cli.") for target in ENTRY_POINTS.values()}
    assert set(wrapped.values()) == commands - {"modeling_mlpl.convert_mctct_to_mlpl"}
    assert all(len(path.read_text().splitlines()) < 15 for path in (REPOSITORY / "scripts").glob("*.py") if path.name in wrapped)
