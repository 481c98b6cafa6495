"""`prefork status|reload|scale N|stop`: talk to a running master through its control socket.

Rules:
- Runs in the operator's shell, never in the server. Finds the socket (control.py
  `default_path` / `discover`), sends one request, prints the answer, and returns an exit
  code for cli.py to exit with: 0 done, 1 the master could not be reached or refused,
  2 usage.
- `status` prints a table for people; `--json` prints the master's document unchanged,
  for scripts (its keys are the contract; the table may change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import control
from .errors import ExitCode

COMMANDS = ("status", "reload", "scale", "stop")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefork", description="Ask a running prefork master through its control socket.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"status": "show the master and a row per worker",
             "reload": "same as kill -HUP: start a new generation, then retire the old one",
             "scale": "run N workers (the oldest retire first when scaling down)",
             "stop": "same as kill -TERM: finish in-flight requests, then exit"}
    for name in COMMANDS:
        cmd = sub.add_parser(name, help=helps[name], description=helps[name])
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("-p", "--pid", metavar="FILE",
                           help="the master's pidfile (its control socket is FILE.ctl)")
        where.add_argument("--control-socket", metavar="PATH", help="the control socket")
        if name == "scale":
            cmd.add_argument("workers", type=int, metavar="N")
        if name == "stop":
            cmd.add_argument("--quick", action="store_true",
                             help="same as kill -INT: do not wait for requests")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print the JSON document")
    return parser


def _socket_path(args: argparse.Namespace) -> str:
    if args.control_socket:
        return str(args.control_socket)
    if args.pid:
        path = control.default_path(None, args.pid, 0)
        assert path is not None
        return path
    found = control.discover()
    if len(found) == 1:
        return found[0]
    where = control.runtime_dir()
    if not found:
        raise control.ControlError(f"no running master found in {where}: give --pid FILE "
                                   "or --control-socket PATH")
    raise control.ControlError(f"{len(found)} masters found ({', '.join(found)}): choose "
                               "one with --control-socket PATH")


def main(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse printed the usage error (or --help)
        return ExitCode.USAGE if exc.code else ExitCode.OK
    request: dict[str, Any] = {"verb": args.command}
    if args.command == "scale":
        request["workers"] = args.workers
    if args.command == "stop" and args.quick:
        request["verb"] = "quick-stop"
    try:
        reply = control.call(_socket_path(args), request)
    except control.ControlError as exc:
        print(f"prefork {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    if args.command == "status":
        text = json.dumps(reply, indent=2) if args.json else format_status(reply)
    elif args.command == "scale":
        text = f"workers={reply['target']}"
    else:
        text = f"{request['verb']}: {reply['state']}, generation {reply['generation']}"
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `prefork status | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return ExitCode.OK


# -- the table ------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.1f}M"


def format_status(doc: dict[str, Any]) -> str:
    m = doc["master"]
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["started"]))
    lines = [
        f"master pid {m['pid']}, {m['state']}, up {_duration(m['uptime'])} (since "
        f"{started}), generation {m['generation']}, {len(doc['workers'])} workers "
        f"(target {m['target']})",
        f"binds: {', '.join(m['binds']) or '-'}"
        + (f"; metrics: {m['metrics_bind']}" if m["metrics_bind"] else ""),
        f"requests: {doc['totals']['requests']}  "
        + "  ".join(f"{k}={v}" for k, v in doc["totals"]["by_status"].items() if v),
    ]
    for t in doc.get("templates", []):
        lines.append(f"template pid {t['pid']}, generation {t['generation']}, {t['state']}, "
                     f"up {_duration(t['age'])}, RSS {_mib(t['rss'])}, PSS {_mib(t['pss'])}")
    if m.get("last_error"):
        lines.append(f"last error: {m['last_error']}")
    lines.append("")
    header = ("SLOT", "PID", "GEN", "STATE", "AGE", "REQS", "BEAT", "RSS", "PSS", "USS",
              "CPU%", "RESTARTS", "CURRENT")
    rows = [header]
    for w in doc["workers"]:
        current = "; ".join(f"{c['method']} {c['path']} ({_duration(c['age'])})"
                            for c in w["current"]) or "-"
        if w["replacing"]:
            current += f" [replacing: {w['replacing']}]"
        restarts = str(w["restarts"])
        if w["last_restart_reason"]:
            restarts += f" ({w['last_restart_reason']})"
        cpu = "-" if w["cpu_percent"] is None else f"{w['cpu_percent']:.1f}"
        rows.append((str(w["slot"]), str(w["pid"]), str(w["generation"]), w["state"],
                     _duration(w["age"]), str(w["requests"]), _duration(w["last_beat"]),
                     _mib(w["rss"]), _mib(w["pss"]), _mib(w["uss"]), cpu, restarts, current))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


if __name__ == "__main__":  # python -m prefork.commands status ...
    sys.exit(main(sys.argv[1:]))
