"""The events of prefork.http11's parser: what a request head and body turn into.

Data only (no parsing here): ``Request`` (a whole, valid head and how its body is
framed), ``Data`` (a piece of the body), ``EndOfMessage`` (with permitted trailers), and
the ``NEED_DATA`` and ``CLOSED`` sentinels, compared with ``is``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(slots=True)
class Request:
    """A request head: what the app may see of it, and how its body is framed."""

    method: str
    target: str
    path: str
    query: str
    version: tuple[int, int]
    headers: list[tuple[str, str]]
    host: str | None
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool


class Data:
    """A piece of the request body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Data) and other.data == self.data

    def __repr__(self) -> str:
        return f"Data({self.data!r})"


class EndOfMessage:
    """End of one request; ``trailers`` holds the permitted chunked trailer fields."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: list[tuple[str, str]] | None = None) -> None:
        self.trailers = [] if trailers is None else trailers

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EndOfMessage) and other.trailers == self.trailers

    def __repr__(self) -> str:
        return f"EndOfMessage({self.trailers!r})"


class Sentinel:
    """NEED_DATA and CLOSED: compare with ``is``."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = Sentinel("NEED_DATA")
CLOSED: Final = Sentinel("CLOSED")
Event = Request | Data | EndOfMessage | Sentinel
