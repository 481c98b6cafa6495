"""Settings: validation, config files and precedence, in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork.cli import build_config
from prefork.config import SETTINGS, ConfigError, load_config_file, validate


def test_every_setting_has_flags_help_and_a_valid_default() -> None:
    for s in SETTINGS:
        assert s.flags and s.help and s.section
        if s.default is not None:
            assert validate(s.name, s.default, "default") == s.default


@pytest.mark.parametrize(("name", "value"), [
    ("workers", "3"), ("workers", 3), ("timeout", "2.5"), ("preload_app", True),
    ("bind", "unix:/tmp/x.sock"), ("bind", ["127.0.0.1:1", "[::1]:2"]), ("umask", "0o27"),
    ("forwarded_allow_ips", "10.0.0.1, 10.0.0.2"), ("raw_env", ["A=1", "B=2=3"]),
])
def test_good_values(name: str, value: object) -> None:
    validate(name, value, "test")


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("workers", "3x", "expected an integer"), ("workers", True, "expected an integer"),
    ("workers", "٣", "expected an integer"), ("workers", 0, "must be >= 1"),
    ("timeout", "soon", "expected a number"), ("timeout", -1, "must be >= 0"),
    ("bind", 8000, "expected a string"), ("raw_env", "NOEQUALS", "expected KEY=VALUE"),
    ("loglevel", "verbose", "expected debug"), ("preload_app", "maybe", "expected a boolean"),
])
def test_bad_values_name_the_setting(name: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid value for {name}: .*{needle}"):
        validate(name, value, "test")


def test_config_file_ignores_private_names_and_modules(tmp_path: Path) -> None:
    path = tmp_path / "conf.py"
    path.write_text("import os\n_helper = 3\nworkers = _helper + 1\nbind = ['unix:/x']\n")
    assert load_config_file(str(path)) == {"workers": 4, "bind": ["unix:/x"]}


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config_file(str(tmp_path / "missing.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("workers = (\n")
    with pytest.raises(ConfigError, match="SyntaxError"):
        load_config_file(str(broken))
    typo = tmp_path / "typo.py"
    typo.write_text("graceful_timout = 3\n")
    with pytest.raises(ConfigError, match=r"did you mean graceful_timeout\?"):
        load_config_file(str(typo))


def test_precedence(tmp_path: Path) -> None:
    path = tmp_path / "conf.py"
    path.write_text("workers = 4\ntimeout = 11\nkeepalive = 9\nmax_requests = 5\n")
    env = {"PREFORK_CMD_ARGS": f"-c {path} --timeout 12 --keep-alive 8",
           "WEB_CONCURRENCY": "7"}
    config = build_config(["app:x", "--keep-alive", "1"], env)
    assert config.app == "app:x"
    assert config.workers == 4  # file beats WEB_CONCURRENCY (a default)
    assert config.timeout == 12.0  # env beats file
    assert config.keepalive == 1.0  # command line beats env
    assert config.max_requests == 5
    assert build_config(["app:x"], {"WEB_CONCURRENCY": "7"}).workers == 7


def test_repeatable_flags() -> None:
    config = build_config(["app:x", "-b", "127.0.0.1:1", "-b", "unix:/s", "-e", "A=1"], {})
    assert config.bind == ["127.0.0.1:1", "unix:/s"]
    assert config.raw_env == ["A=1"]


def test_http_date_matches_the_imf_fixdate_of_the_stdlib() -> None:
    import time
    from email.utils import formatdate

    from prefork.wsgi import http_date

    before = int(time.time())
    value = http_date().decode()
    assert value in (formatdate(before, usegmt=True), formatdate(before + 1, usegmt=True))
