"""Token discovery, storage and redaction (no network; /whoami is tested against the sandbox)."""

from __future__ import annotations

import logging

import keyring
import keyring.backend
import keyring.errors
import pytest

from mastpipe.auth import (
    KEYRING_SERVICE,
    KEYRING_USERNAME,
    RedactingFilter,
    discover_token,
    redact,
    require_cookie_safe,
    store_token,
)
from mastpipe.errors import AuthError

TOKEN = "s3cr3t-T0KEN-abcdef"


class MemoryKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.NoKeyringError("no backend")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError(f"refused {password}")


@pytest.fixture
def memory_keyring():
    previous = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


def test_env_wins(memory_keyring: MemoryKeyring) -> None:
    memory_keyring.store[(KEYRING_SERVICE, KEYRING_USERNAME)] = "from-keyring"
    assert discover_token({"MAST_API_TOKEN": f"  {TOKEN}\n"}) == TOKEN


def test_keyring_where_astroquery_keeps_it(memory_keyring: MemoryKeyring) -> None:
    memory_keyring.store[("astroquery:mast.stsci.edu.token", "masttoken")] = "from-keyring"
    assert discover_token({}) == "from-keyring"
    assert discover_token({"MAST_API_TOKEN": ""}) == "from-keyring"


def test_no_token_anywhere(memory_keyring: MemoryKeyring) -> None:
    assert discover_token({}) is None


def test_broken_keyring_is_tolerated() -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(BrokenKeyring())
    try:
        assert discover_token({}) is None
        with pytest.raises(AuthError) as info:
            store_token(TOKEN)
        assert TOKEN not in str(info.value)
    finally:
        keyring.set_keyring(previous)


def test_store_then_discover(memory_keyring: MemoryKeyring) -> None:
    store_token(TOKEN)
    assert memory_keyring.store[(KEYRING_SERVICE, KEYRING_USERNAME)] == TOKEN
    assert discover_token({}) == TOKEN


def test_redact() -> None:
    assert redact(f"Cookie: mast_token={TOKEN}; x={TOKEN}", TOKEN) == "Cookie: mast_token=***; x=***"
    assert redact("nothing here", None, "") == "nothing here"


def test_redacting_filter_cleans_messages_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mastpipe.test_auth")
    caplog.handler.addFilter(RedactingFilter(TOKEN))
    try:
        with caplog.at_level(logging.DEBUG, logger="mastpipe.test_auth"):
            logger.info("header %r", {"Cookie": f"mast_token={TOKEN}"})
            try:
                raise RuntimeError(f"failed with {TOKEN}")
            except RuntimeError:
                logger.exception("boom")
    finally:
        caplog.handler.filters.clear()
    assert len(caplog.records) == 2
    assert TOKEN not in caplog.text
    assert "***" in caplog.text


def test_filter_made_before_the_token_was_read_still_redacts_it(caplog: pytest.LogCaptureFixture,
                                                                 memory_keyring: MemoryKeyring) -> None:
    # The command line installs its filter before any token is known; reading one arms it.
    late = "late0123456789abcdef0123456789ab"
    caplog.handler.addFilter(RedactingFilter())
    logger = logging.getLogger("mastpipe.test_auth")
    try:
        with caplog.at_level(logging.INFO, logger="mastpipe.test_auth"):
            assert discover_token({"MAST_API_TOKEN": late}) == late
            logger.info("sending %s", late)
    finally:
        caplog.handler.filters.clear()
    assert late not in caplog.text and "sending ***" in caplog.text


@pytest.mark.parametrize("token", ["two\nlines", "with space", "semi;colon", 'quo"te', "back\\slash", "tab\t"])
def test_a_token_a_cookie_cannot_carry_is_refused_without_echo(token: str) -> None:
    with pytest.raises(AuthError, match="cannot carry") as info:
        require_cookie_safe(token)
    assert token not in str(info.value) and token.split()[0] not in str(info.value)
