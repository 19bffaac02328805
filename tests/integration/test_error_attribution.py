"""Errors are blamed on what caused them, with the exit code the README gives that cause.

Against the real sandbox: a token MAST refuses is not "MAST unreachable", and the exception
types say which (no caller needs to read message text). A corrupt download ledger is not "some
files failed": it only records what was downloaded, so it is set aside with a warning and the
files on disk are adopted again by size, without a download.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

import mastpipe
from mastpipe.auth import check_token
from mastpipe.errors import AuthError, LedgerError, StateError, TokenCheckError, TokenRefusedError
from mastpipe.stages.retrieve.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]
SEED = "jwst-1073-nircam-uncal.yaml"

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


# -- a corrupt download ledger: set aside with a warning, nothing downloaded again -------------

GARBAGE = b"this is not sqlite" * 100


def _corrupt_files(state: Path) -> list[Path]:
    return sorted(state.glob("ledger.sqlite.corrupt-*"))


def test_a_ledger_that_is_not_a_database_is_set_aside_with_a_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "ledger.sqlite").write_bytes(GARBAGE)
    caplog.set_level(logging.WARNING, logger="mastpipe")
    with Ledger(tmp_path) as ledger:
        assert ledger.rows() == {}
        ledger.mark_done("mast:a", tmp_path / "a", 1, "00" * 32, attempts=1)
    with Ledger(tmp_path) as ledger:
        assert ledger.rows().keys() == {"mast:a"}
    (aside,) = _corrupt_files(tmp_path)
    assert aside.read_bytes() == GARBAGE, "the corrupt ledger is kept, not deleted"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and str(tmp_path / "ledger.sqlite") in said[0] and aside.name in said[0]
    assert "file is not a database" in said[0]


def test_damage_past_a_sound_header_is_set_aside_when_read(tmp_path: Path, caplog) -> None:
    with Ledger(tmp_path) as ledger:
        for i in range(2000):
            ledger.mark_done(f"mast:{i}", f"/d/{i}", i, "00" * 32, attempts=1)
    path = tmp_path / "ledger.sqlite"
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # keep the header page, ruin the rest
    path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="mastpipe")
    with Ledger(tmp_path) as ledger:
        assert ledger.rows() == {}
    assert len(_corrupt_files(tmp_path)) == 1
    assert any("was corrupt" in r.getMessage() for r in caplog.records)


def test_a_ledger_that_cannot_be_opened_is_exit_2_with_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(LedgerError) as caught:
        Ledger(blocker / "ledger.sqlite")
    error = caught.value
    assert isinstance(error, StateError) and error.exit_code == 2
    assert str(blocker / "ledger.sqlite") in error.message
    assert "adopted by their size" in error.hint and "--verify" in error.hint


def test_a_rerun_over_a_corrupt_ledger_downloads_nothing_again(sandbox, tmp_path: Path, caplog) -> None:
    shutil.copy(REPO / "pipelines" / SEED, tmp_path / SEED)
    recipe = tmp_path / SEED
    first = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert first.exit_code == 0 and first.report["retrieve"]["fetched"]["files"] > 0
    (ledger,) = tmp_path.rglob("ledger.sqlite")
    ledger.write_bytes(GARBAGE)
    sandbox.log.clear()
    caplog.set_level(logging.WARNING, logger="mastpipe")
    again = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert again.exit_code == 0
    assert [r for r in sandbox.log.records() if r.endpoint == "download"] == []
    assert again.report["retrieve"]["fetched"]["files"] == 0
    assert any(str(ledger) in r.getMessage() and "was corrupt" in r.getMessage() for r in caplog.records)
    assert len(_corrupt_files(ledger.parent)) == 1


def test_status_reads_a_corrupt_ledger_without_setting_it_aside(sandbox, tmp_path: Path, caplog) -> None:
    from mastpipe.runner import Pipeline

    shutil.copy(REPO / "pipelines" / SEED, tmp_path / SEED)
    assert mastpipe.run(tmp_path / SEED, mast_url=sandbox.url, environ={}).exit_code == 0
    (ledger,) = tmp_path.rglob("ledger.sqlite")
    ledger.write_bytes(GARBAGE)
    caplog.set_level(logging.WARNING, logger="mastpipe")
    outlook = Pipeline(tmp_path / SEED, mast_url=sandbox.url, environ={}).retrieve_status()
    assert outlook is not None and outlook.present == outlook.files  # judged from the disk alone
    assert ledger.read_bytes() == GARBAGE and _corrupt_files(ledger.parent) == []
    assert any("next run sets it aside" in r.getMessage() for r in caplog.records)
