"""Messages that tell the truth: what the free-space check keeps in reserve, why a token was not
sent, how many attempts ``retries`` allows, which labels are not secrets, and nothing left behind
by a manifest write that was cut short."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from _transfer_support import EXCLUSIVE_OBSID, FAST, public_rows, task_for

import mastpipe
from mastpipe.errors import RecipeError, TransferError
from mastpipe.recipe.models import load_recipe
from mastpipe.retry import RetryPolicy
from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.engine import Transfer
from mastpipe.stages.retrieve.paths import check_free_space

REPO = Path(__file__).resolve().parents[2]


def test_the_free_space_check_states_its_margin(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(TransferError) as caught:
        check_free_space(tmp_path, free)  # exactly what is free: the margin is what is missing
    message = caught.value.message
    assert re.search(r"need [\d.]+ [KMGT]?i?B \+ 64\.0 MiB margin; [\d.]+ [KMGT]?i?B free", message), message
    assert str(tmp_path) in message


def test_a_query_named_secret_is_a_label_and_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nname: labels\nquery:\n  secret:\n    criteria: {obs_collection: JWST}\n"
                    "  tokens_of_light:\n    criteria: {obs_collection: HST}\n")
    recipe = load_recipe(path, environ={})
    assert set(recipe.query) == {"secret", "tokens_of_light"}


def test_a_token_like_value_under_a_query_named_secret_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nname: labels\nquery:\n  secret:\n    criteria: {obs_id: "
                    "0123456789abcdef0123456789abcdef}\n")
    with pytest.raises(RecipeError, match="looks like an access token"):
        load_recipe(path, environ={})


def test_a_401_after_a_redirect_to_another_host_says_the_token_was_withheld(sandbox_factory, tmp_path) -> None:
    mirror = sandbox_factory(seed=0)  # the same catalogue on another port: another host
    front = sandbox_factory(seed=0, faults=f"download.redirect={mirror.url}")
    row = next(r for r in front.catalog.products(EXCLUSIVE_OBSID) if r["dataRights"] == "EXCLUSIVE_ACCESS")
    task = task_for(front, row, tmp_path)
    front_host = front.url.split("//", 1)[1]
    [result] = Transfer(policy=FAST, token="good-token", token_hosts=(front_host,)).run([task])
    assert result.status == "failed"
    assert "401" in result.error and "withheld from that host on purpose" in result.error
    assert mirror.url.split("//", 1)[1] in result.error
    assert "does not grant access" not in result.error
    assert [r.has_token for r in mirror.log.records() if r.endpoint == "download"] == [False]
    assert "good-token" not in result.error


def test_gave_up_after_n_attempts_agrees_with_retries(sandbox, tmp_path: Path) -> None:
    row = public_rows(sandbox, 1)[0]
    sandbox.faults = Faults.parse("download.fail_first=10:503")
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)  # retries: 2
    [result] = Transfer(policy=policy).run([task_for(sandbox, row, tmp_path)])
    assert result.error.endswith("(gave up after 3 attempts)"), result.error


def test_gave_up_says_why_attempts_exceed_retries(sandbox, tmp_path: Path) -> None:
    row = sandbox.catalog.add_product("87600001", productFilename="halves_cal.fits", size=40_000)
    sandbox.faults = Faults.parse("download.drop_rate=1,download.drop_at=0.5")  # each attempt half of the rest
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002)  # retries: 1
    [result] = Transfer(policy=policy, run_retry_budget=100).run([task_for(sandbox, row, tmp_path)])
    assert result.status == "failed"
    found = re.search(r"gave up after (\d+) attempts: retries: 1 allows 2 attempts in a row that keep no "
                      r"new byte; the (\d+) before them kept new bytes", result.error)
    assert found, result.error
    assert int(found.group(1)) == int(found.group(2)) + 2 == result.attempts


def test_a_stale_manifest_temporary_is_swept_by_the_next_run(sandbox, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    shutil.copy(REPO / "pipelines" / "jwst-1073-nircam-uncal.yaml", recipe)
    destination = tmp_path / "data" / "jwst-1073"
    destination.mkdir(parents=True)
    dead = 4194303  # above any pid in use here (pid_max is 4194304 at most)
    stale = [destination / f".manifest.ecsv.{dead}.tmp", destination / f".manifest.ecsv.{dead}.a1b2c3.tmp"]
    for path in stale:
        path.write_text("half a manifest")
        os.utime(path, (1, 1))
    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert outcome.exit_code == 0
    assert [p for p in stale if p.exists()] == []
    assert (destination / "manifest.ecsv").exists()
