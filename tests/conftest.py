"""Fixtures shared by the behaviour tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, Server

# Every server, CLI and helper process the tests start imports prefork from this tree,
# even when the installed (editable) package points at another checkout of it.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real servers (`servers("tests.apps:app", "--flag", workers=2)`); each is
    stopped at teardown, which fails if any of its processes survives."""
    started: list[Server] = []

    def start(*args: str, **kw: Any) -> Server:
        server = Server(tmp_path, *args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
