"""The package boundaries of the design, checked on the source (every import, local ones too):
``ssf/`` does no I/O and stands alone, the transmitter and the receiver meet only on the wire,
and the conformance kit judges peers with nothing of ours but ``ssf``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"ssf", "transmitter", "receiver", "conformance", "ssfcli", "demo", "bench", "tests"}
#: Modules whose use means network, files, processes, threads or a database.
IO_MODULES = {
    "aiohttp",
    "asyncio",
    "http",
    "httptools",
    "httpx",
    "psycopg",
    "queue",
    "redis",
    "selectors",
    "socket",
    "sqlalchemy",
    "sqlite3",
    "sqlmodel",
    "ssl",
    "starlette",
    "fastapi",
    "subprocess",
    "threading",
    "urllib.request",
    "uvicorn",
}


def imports(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports (absolute names; relative ones resolve
    inside the package and are left out)."""
    out: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        out[str(path.relative_to(root))] = names
    return out


def offending(package: str, forbidden: set[str], root: Path = ROOT) -> list[str]:
    return sorted(
        f"{file}: {name}"
        for file, names in imports(package, root).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_ssf_does_no_io_and_imports_nothing_else_of_ours() -> None:
    assert offending("ssf", IO_MODULES | (OURS - {"ssf"})) == []


@pytest.mark.parametrize(("package", "other"), [("transmitter", "receiver"), ("receiver", "transmitter")])
def test_transmitter_and_receiver_never_import_each_other(package: str, other: str) -> None:
    assert offending(package, {other, "demo", "conformance", "bench", "tests"}) == []


def test_the_conformance_kit_imports_only_ssf_of_ours() -> None:
    assert offending("conformance", OURS - {"ssf", "conformance"}) == []


def test_the_checks_see_local_and_from_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "import json\n\ndef f():\n    import socket\n    from transmitter.app import x\n"
        "    from urllib import request\n    from . import sibling\n"
    )
    found = offending("pkg", {"socket", "transmitter", "urllib.request", "json.decoder"}, tmp_path)
    assert found == [
        "pkg/m.py: socket",
        "pkg/m.py: transmitter.app",
        "pkg/m.py: transmitter.app.x",
        "pkg/m.py: urllib.request",
    ]
