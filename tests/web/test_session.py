"""The dashboard's session cookie, CSRF tokens and "back to" links, without a server: what a forger or
a stale cookie gets (nothing), and that a form can only send you to a page of this server."""

from __future__ import annotations

import pytest

from stagewatch.api.app import create_app
from stagewatch.settings import Settings
from stagewatch.web.responses import local_path
from stagewatch.web.session import (
    SESSION_SECONDS,
    csrf_ok,
    csrf_token,
    new_session,
    read_session,
    session_key,
)

KEY = session_key("shared by every replica")


def test_a_session_reads_back_with_its_name_and_no_token() -> None:
    session = new_session(KEY, "alice", now=1000.0)
    assert read_session(KEY, session.value, now=1001.0) == session
    assert session.expires == 1000.0 + SESSION_SECONDS and "sw_" not in session.value


def test_the_same_secret_gives_the_same_key_on_every_replica_and_none_a_random_one() -> None:
    assert session_key("shared by every replica") == KEY
    assert session_key(None) != session_key(None)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: ("B" if v[0] == "A" else "A") + v[1:],  # another body, the same signature
        lambda v: v.split(".")[0] + "." + "A" * 43,  # a made-up signature
        lambda v: v + ".x",
        lambda v: "",
    ],
)
def test_a_forged_or_damaged_cookie_is_no_session(tamper: object) -> None:
    value = new_session(KEY, "alice").value
    assert callable(tamper)
    assert read_session(KEY, tamper(value)) is None


def test_another_key_or_an_expired_session_is_no_session() -> None:
    session = new_session(KEY, "alice", now=1000.0)
    assert read_session(session_key("other"), session.value, now=1001.0) is None
    assert read_session(KEY, session.value, now=1000.0 + SESSION_SECONDS + 1) is None


def test_a_csrf_token_belongs_to_one_session() -> None:
    mine, theirs = new_session(KEY, "alice").value, new_session(KEY, "alice").value
    token = csrf_token(KEY, mine)
    assert csrf_ok(KEY, mine, token)
    assert not csrf_ok(KEY, theirs, token)
    assert not csrf_ok(KEY, mine, None) and not csrf_ok(KEY, None, token) and not csrf_ok(KEY, mine, "")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/videos?status=failed", "/videos?status=failed"),
        ("/videos/a%2Fb", "/videos/a%2Fb"),
        ("https://evil.example/", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_a_back_link_only_ever_leads_to_this_server(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


def test_the_server_signs_sessions_with_the_configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEWATCH_SESSION_SECRET", "shared by every replica")
    settings = Settings()
    assert "shared by every replica" not in repr(settings), "the secret must not show in logs or reprs"
    assert create_app(settings).state.web.key == KEY
    assert create_app(Settings(session_secret="other")).state.web.key == session_key("other")
