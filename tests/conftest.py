"""Fixtures shared by the behaviour tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server


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
