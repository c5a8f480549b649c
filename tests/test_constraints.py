"""constraints/tested-py*.txt, the versions scripts/setup.sh installs by default: every requirement of pyproject
(dependencies and the dev / demo extras that set-up installs) is pinned there to a version its range admits, and
torch is not pinned (set-up installs it first, the machine's own build)."""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
CONSTRAINT_FILES = sorted((REPOSITORY / "constraints").glob("tested-py*.txt"))


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        assert separator and version, f"{path.name}:{number}: {line!r} is not an exact pin NAME==VERSION"
        pins[canonicalize_name(name)] = version
    return pins


def installed_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    return [Requirement(text) for text in [*project["dependencies"], *extras["dev"], *extras["demo"]]]


def test_there_is_a_constraints_file_for_the_python_ci_runs():
    assert (REPOSITORY / "constraints" / "tested-py311.txt") in CONSTRAINT_FILES
    assert "constraints/tested-py" in (REPOSITORY / "scripts" / "setup.sh").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", CONSTRAINT_FILES, ids=lambda path: path.name)
def test_every_requirement_is_pinned_inside_its_range_and_torch_is_left_to_the_machine(path):
    pins = read_pins(path)
    assert "torch" not in pins, "torch is installed before the constraints apply (scripts/setup.sh)"
    for requirement in installed_requirements():
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{path.name} does not pin {requirement.name}: refresh it (its header says how)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{path.name} pins {requirement.name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_read_pins_rejects_a_range(tmp_path):
    bad = tmp_path / "tested-py311.txt"
    bad.write_text("# header\nnumpy>=2\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="tested-py311.txt:2"):
        read_pins(bad)
