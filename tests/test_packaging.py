"""The package as published: one version, the licence, the URLs, the classifiers CI
backs, the wheel's contents, and a README whose links work on the package index."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest

import sessionstore
from sessionstore.schemas import SCHEMA_VERSIONS, schema_file_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
REPOSITORY = "https://github.com/sessionstore/sessionstore"
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT: dict[str, Any] = PYPROJECT["project"]


def test_the_version_is_written_in_one_place() -> None:
    assert "version" not in PROJECT
    assert PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "src/sessionstore/__init__.py"
    init = (ROOT / "src" / "sessionstore" / "__init__.py").read_text()
    assert re.findall(r'^__version__ = "([^"]+)"$', init, re.MULTILINE) == [
        sessionstore.__version__
    ]
    assert re.fullmatch(r"\d+\.\d+\.\d+", sessionstore.__version__)


def _ci_pythons() -> set[str]:
    script = (ROOT / ".ci" / "run").read_text()
    main = re.findall(r"^MAIN_PYTHON=(3\.\d+)$", script, re.MULTILINE)
    others = re.findall(r"^OTHER_PYTHONS=\$\{SESSIONSTORE_CI_PYTHONS-([^}]*)\}$", script, re.M)
    assert len(main) == 1, "MAIN_PYTHON is no longer set once in .ci/run"
    assert len(others) == 1, "OTHER_PYTHONS is no longer set once in .ci/run"
    return {main[0], *others[0].split()}


def test_the_python_classifiers_are_the_versions_ci_tests() -> None:
    claimed = {
        classifier.rsplit(" :: ", 1)[1]
        for classifier in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", classifier)
    }
    assert claimed == _ci_pythons()
    oldest = min(claimed, key=lambda version: tuple(map(int, version.split("."))))
    assert PROJECT["requires-python"] == f">={oldest}"


def test_licence_and_urls() -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert "Copyright (c) 2026 sessionstore maintainers" in licence
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    urls = PROJECT["urls"]
    assert set(urls) == {"Homepage", "Source", "Issues", "Changelog"}
    assert all(url.startswith(REPOSITORY) for url in urls.values())
    assert urls["Changelog"] == f"{REPOSITORY}/blob/main/CHANGELOG.md"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this checkout without network (hatchling is a dev dependency)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(out), str(ROOT)),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("sessionstore-*.whl")
    return built


def test_the_wheel_ships_the_schemas_the_licence_and_the_metadata(wheel: Path) -> None:
    version = sessionstore.__version__
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for schema_version in SCHEMA_VERSIONS:
            name = schema_file_name(schema_version)
            shipped = archive.read(f"sessionstore/schemas/{name}")
            assert shipped == (ROOT / "schemas" / name).read_bytes(), name
        assert f"sessionstore-{version}.dist-info/licenses/LICENSE" in names
        assert "sessionstore/py.typed" in names
        assert not [name for name in names if name.startswith(("tests/", "benchmarks/"))]
        metadata = Parser().parsestr(
            archive.read(f"sessionstore-{version}.dist-info/METADATA").decode()
        )
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    assert set(metadata.get_all("Classifier") or []) == set(PROJECT["classifiers"])
    assert {url.split(",")[0] for url in metadata.get_all("Project-URL") or []} == {
        "Homepage",
        "Source",
        "Issues",
        "Changelog",
    }
    requires = {re.split(r"[<>=;\[ ]", r)[0] for r in metadata.get_all("Requires-Dist") or []}
    assert {"pydantic", "orjson", "xxhash"} <= requires


# --- the README, which is also the package's page on the index ---------------------

README = (ROOT / "README.md").read_text()
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor GitHub and the package index give a heading."""
    text = heading.strip().lower().replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors() -> set[str]:
    outside_code = re.sub(r"```.*?```", "", README, flags=re.DOTALL)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", outside_code, re.MULTILINE)}


def test_readme_links_work_once_published() -> None:
    """Relative links break on the package index: files are linked by absolute URL."""
    links = LINK.findall(re.sub(r"```.*?```", "", README, flags=re.DOTALL))
    assert links, "the README has no links: the pattern is broken"
    anchors = _anchors()
    for text, target in links:
        if target.startswith("#"):
            assert target[1:] in anchors, f"[{text}]({target}): no such heading"
        else:
            assert target.startswith("https://"), f"[{text}]({target}) is relative"
        if target.startswith((f"{REPOSITORY}/blob/main/", f"{REPOSITORY}/tree/main/")):
            path = target.split("/main/", 1)[1].split("#")[0]
            assert (ROOT / path).exists(), f"[{text}]({target}): no {path} in the repository"


def test_readme_has_a_table_of_contents_and_a_glossary() -> None:
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = {target[1:] for _, target in LINK.findall(contents) if target.startswith("#")}
    outside_code = re.sub(r"```.*?```", "", README, flags=re.DOTALL)
    top_level = {_slug(h) for h in re.findall(r"^## (.+)$", outside_code, re.MULTILINE)}
    top_level.discard("contents")
    assert listed == top_level
    glossary = README.split("## Glossary", 1)[1].split("\n## ", 1)[0]
    for term in ["original module", ".port_sessions", "etag", "schema version", "migrat"]:
        assert term in glossary.lower(), term
    assert "quarantine" in glossary.lower()
