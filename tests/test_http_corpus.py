"""Replay tests/http_corpus/ through prefork.http11, split every which way.

Each case is fed whole, line by line (cut after every LF), byte by byte and in seeded
random chunks; the event trace (Data merged per request) and the final outcome must be
identical for every split and match the expected result. Regenerate the corpus with
tests/make_http_corpus.py.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from prefork.http11 import (
    CLOSED,
    NEED_DATA,
    Data,
    EndOfMessage,
    Limits,
    ProtocolError,
    Request,
    RequestParser,
)

CORPUS = Path(__file__).parent / "http_corpus"
VALID = sorted(CORPUS.glob("valid/*.http"))
INVALID = sorted(CORPUS.glob("invalid/*.http"))
SEEDS = range(6)


def split_lines(raw: bytes) -> list[bytes]:
    pieces, start = [], 0
    while (nl := raw.find(b"\n", start)) >= 0:
        pieces.append(raw[start : nl + 1])
        start = nl + 1
    if start < len(raw):
        pieces.append(raw[start:])
    return pieces


def split_random(raw: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    top = rng.choice((3, 16, 200))
    pieces, pos = [], 0
    while pos < len(raw):
        n = rng.randint(1, top)
        pieces.append(raw[pos : pos + n])
        pos += n
    return pieces


def splits(raw: bytes) -> Iterator[tuple[str, list[bytes]]]:
    yield "whole", [raw]
    yield "lines", split_lines(raw)
    yield "bytes", [raw[i : i + 1] for i in range(len(raw))]
    for seed in SEEDS:
        yield f"random{seed}", split_random(raw, seed)


def replay(pieces: list[bytes], limits: Limits, receive: bool = False) -> list[Any]:
    """Feed pieces (draining after each), then EOF; return a normalized trace. With
    `receive`, each piece goes in through receive() (feed and first event in one call)."""
    parser = RequestParser(limits)
    trace: list[Any] = []
    body: bytearray | None = None

    def drain(pending: Callable[[], Any]) -> bool:
        nonlocal body
        while True:
            try:
                event = pending()
                pending = parser.next_event
            except ProtocolError as exc:
                trace.append(("error", exc.status, exc.reason))
                # Dead for good: the very same error again, and feed() is ignored.
                with pytest.raises(ProtocolError) as again:
                    parser.next_event()
                assert again.value is exc
                return False
            if event is NEED_DATA:
                return True
            if event is CLOSED:
                trace.append(("closed",))
                assert parser.next_event() is CLOSED
                return False
            if isinstance(event, Request):
                assert body is None
                trace.append(("request", asdict(event)))
                body = bytearray()
                assert parser.in_request
            elif isinstance(event, Data):
                assert body is not None and event.data
                body += event.data
            else:
                assert isinstance(event, EndOfMessage) and body is not None
                trace.append(("body", bytes(body)))
                trace.append(("eom", event.trailers))
                body = None

    for piece in pieces:
        if receive:
            alive = drain(functools.partial(parser.receive, piece))
        else:
            parser.feed(piece)
            alive = drain(parser.next_event)
        if not alive:
            return trace
    parser.feed(b"")
    drain(parser.next_event)
    return trace


def load_invalid(path: Path) -> tuple[bytes, int, int, str, Limits]:
    raw = path.read_bytes()
    meta: dict[str, str] = {}
    while raw.startswith(b"# "):
        line, _, raw = raw.partition(b"\n")
        key, _, value = line[2:].decode("ascii").partition(": ")
        meta[key] = value
    limits = Limits()
    for item in meta.get("limits", "").split():
        key, _, value = item.partition("=")
        setattr(limits, key, int(value))
    return raw, int(meta["status"]), int(meta.get("requests", "0")), meta.get("reason", ""), limits


def expected_trace(doc: dict[str, Any]) -> list[Any]:
    trace: list[Any] = []
    for r in doc["requests"]:
        fields = {
            k: r[k]
            for k in (
                "method",
                "target",
                "path",
                "query",
                "host",
                "content_length",
                "chunked",
                "keep_alive",
                "expect_continue",
            )
        }
        fields["version"] = tuple(r["version"])
        fields["headers"] = [tuple(h) for h in r["headers"]]
        trace.append(("request", fields))
        trace.append(("body", r["body"].encode("latin-1")))
        trace.append(("eom", [tuple(t) for t in r["trailers"]]))
    trace.append(("closed",))
    return trace


def test_corpus_is_big_enough() -> None:
    assert len(VALID) >= 40 and len(INVALID) >= 100
    for path in VALID:
        assert path.with_suffix(".json").exists(), path
        assert b"\r\n" in path.read_bytes(), path


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_case(path: Path) -> None:
    raw = path.read_bytes()
    doc = json.loads(path.with_suffix(".json").read_text(encoding="ascii"))
    limits = Limits(**doc.get("limits", {}))
    expected = expected_trace(doc)
    for how, pieces in splits(raw):
        assert b"".join(pieces) == raw
        assert replay(pieces, limits) == expected, how
        assert replay(pieces, limits, receive=True) == expected, f"{how}, receive()"


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_case(path: Path) -> None:
    raw, status, requests, reason, limits = load_invalid(path)
    reference = replay([raw], limits)
    assert reference[-1][:2] == ("error", status)
    assert reason in reference[-1][2]
    assert sum(1 for item in reference if item[0] == "eom") == requests
    for how, pieces in splits(raw):
        assert replay(pieces, limits) == reference, how
        assert replay(pieces, limits, receive=True) == reference, f"{how}, receive()"


MUTATIONS = [
    b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b",", b";", b"=", b'"', b"\\",
    b"0", b"5", b"a", b"_", b"\x00", b"\x0b", b"\xa0", b"/", b"?", b"*", b"@", b"[", b"]",
    b"chunked", b"HTTP/1.1", b"Host: a\r\n", b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
]


@pytest.mark.parametrize("seed", range(8))
def test_mutated_cases_are_split_invariant(seed: int) -> None:
    """Random edits of corpus cases, with random small limits: the trace (events, status
    and reason) must not depend on how the bytes are split."""
    rng = random.Random(seed)
    cases = [path.read_bytes() for path in VALID] + [load_invalid(p)[0] for p in INVALID]
    cases = [raw for raw in cases if len(raw) < 3000]
    for _ in range(60):
        data = bytearray(rng.choice(cases))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randint(0, len(data))
            op = rng.random()
            if op < 0.4:
                data[pos:pos] = rng.choice(MUTATIONS)
            elif op < 0.7:
                del data[pos : pos + rng.randint(1, 3)]
            elif data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
        raw = bytes(data)
        limits = Limits()
        if rng.random() < 0.3:
            limits = Limits(
                request_line=rng.randint(10, 40), fields=rng.randint(1, 5),
                field_size=rng.randint(5, 40), body=rng.randint(0, 10),
                chunk_ext=rng.randint(1, 12),
            )  # fmt: skip
        reference = replay([raw], limits)
        pieces = [raw[i : i + 1] for i in range(len(raw))]
        assert replay(pieces, limits) == reference, raw
        assert replay(split_random(raw, seed), limits) == reference, raw
        assert replay(split_random(raw, seed), limits, receive=True) == reference, raw
