"""Errors are blamed on what caused them, with the exit code the README gives that cause.

Against the real sandbox: a token MAST refuses is not "MAST unreachable", and the exception
types say which (no caller needs to read message text).
"""

from __future__ import annotations

import pytest

from mastpipe.auth import check_token
from mastpipe.errors import AuthError, TokenCheckError, TokenRefusedError

GOOD_TOKEN = "good-token"  # the sandbox fixtures' valid token


def test_a_token_mast_refuses_is_bad_input_exit_2(sandbox) -> None:
    with pytest.raises(TokenRefusedError) as caught:
        check_token(sandbox.url, "not-the-token")
    assert isinstance(caught.value, AuthError)  # callers catching AuthError still do
    assert caught.value.exit_code == 2 and "not accepted" in caught.value.message
    assert [r.endpoint for r in sandbox.log.records()] == ["whoami"]


def test_a_token_no_cookie_can_carry_is_refused_before_any_request(sandbox) -> None:
    with pytest.raises(TokenRefusedError) as caught:
        check_token(sandbox.url, "two words")
    assert caught.value.exit_code == 2 and "cannot carry" in caught.value.message
    assert sandbox.log.records() == []


def test_mast_that_cannot_be_asked_is_exit_3(sandbox_factory) -> None:
    stopped = sandbox_factory(seed=0)
    url = stopped.url
    stopped.stop()
    with pytest.raises(TokenCheckError) as caught:
        check_token(url, GOOD_TOKEN, timeout=5)
    assert isinstance(caught.value, AuthError) and not isinstance(caught.value, TokenRefusedError)
    assert caught.value.exit_code == 3 and caught.value.message.startswith("could not check the MAST token")


def test_a_good_token_is_accepted(sandbox) -> None:
    assert check_token(sandbox.url, GOOD_TOKEN)["anon"] is False
