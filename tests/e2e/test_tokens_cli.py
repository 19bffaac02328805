"""Exclusive-access data through the command line: the token works, and never leaks.

The sandbox accepts one token; the seed recipe is widened to select exclusive-access files
too. Every file mastpipe leaves behind (state, manifest, data), and everything it prints, is
searched for the token.
"""

from __future__ import annotations

from pathlib import Path

from astropy.table import Table

import mastpipe
from mastpipe.sandbox import Sandbox

TOKEN = "0123456789abcdef0123456789abcdef"  # looks like a real MAST token (32 hex digits)

RECIPE = """\
version: 1
name: exclusive
query:
  everything:
    criteria: {obs_collection: JWST, proposal_id: ["1073", "4242"]}
filter:
  endswith: [_uncal.fits]
retrieve:
  destination: data
"""


def _exclusive_in(workdir: Path) -> Table:
    return mastpipe.read_manifest(workdir / "data" / "manifest.ecsv")


def _all_text_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_exclusive_files_need_the_token_and_the_token_leaks_nowhere(tmp_path: Path, cli) -> None:
    recipe = tmp_path / "exclusive.yaml"
    recipe.write_text(RECIPE)
    with Sandbox(seed=0, tokens={TOKEN: "A. User"}) as sb:
        protected = [p["dataURI"] for o in sb.catalog.observations() if o["proposal_id"] in ("1073", "4242")
                     for p in sb.catalog.products(o["obsid"])
                     if p["dataRights"] == "EXCLUSIVE_ACCESS" and p["productFilename"].endswith("_uncal.fits")]
        assert protected, "the sandbox catalogue should hold exclusive-access products"

        without = cli("run", str(recipe), "--mast-url", sb.url, cwd=tmp_path)
        assert without.returncode == 1, without.stdout + without.stderr
        assert "no MAST token is set" in without.stderr and "MAST_API_TOKEN" in without.stderr
        manifest = _exclusive_in(tmp_path)
        by_uri = {row["dataURI"]: row for row in manifest}
        assert all(by_uri[uri]["status"] == "failed" for uri in protected)
        assert any(row["status"] == "fetched" for row in manifest), "public files must proceed"
        assert not any(r.uri in protected for r in sb.log.records() if r.endpoint == "download")

        with_token = cli("run", str(recipe), "--mast-url", sb.url, "-v", cwd=tmp_path,
                         env={"MAST_API_TOKEN": TOKEN})
        assert with_token.returncode == 0, with_token.stdout + with_token.stderr
        manifest = _exclusive_in(tmp_path)
        assert set(manifest["status"]) <= {"fetched", "skipped"}
        for uri in protected:
            path = Path({row["dataURI"]: row for row in manifest}[uri]["path"])
            assert path.stat().st_size == sb.catalog.file_size(uri)
        whoami = [r for r in sb.log.records() if r.endpoint == "whoami"]
        assert len(whoami) == 1, "the token is checked once per run"

        # Once the files are here, a rerun needs the token for nothing: no /whoami with it,
        # no failure without it (the files are present, not "refused").
        sb.log.clear()
        again = cli("run", str(recipe), "--mast-url", sb.url, cwd=tmp_path, env={"MAST_API_TOKEN": TOKEN})
        assert again.returncode == 0, again.stdout + again.stderr
        assert sb.log.records() == [], "a rerun over present files makes no request at all"
        tokenless = cli("run", str(recipe), "--mast-url", sb.url, cwd=tmp_path)
        assert tokenless.returncode == 0, tokenless.stdout + tokenless.stderr
        assert "nothing new" in tokenless.stdout and "token" not in tokenless.stderr
        assert set(_exclusive_in(tmp_path)["status"]) == {"skipped"}
        assert sb.log.records() == []

    for text in (without.stdout, without.stderr, with_token.stdout, with_token.stderr, again.stdout, again.stderr):
        assert TOKEN not in text
    assert TOKEN.encode() not in _all_text_under(tmp_path)


def test_login_checks_the_token_and_stores_it_in_the_keyring(tmp_path: Path, cli, login) -> None:
    env = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring", "XDG_DATA_HOME": str(tmp_path / "xdg")}
    with Sandbox(seed=0, tokens={TOKEN: "A. User"}) as sb:
        refused = login(sb.url, "not-a-valid-token\n")
        assert refused.returncode == 2 and "not-a-valid-token" not in refused.stdout + refused.stderr
        accepted = login(sb.url, TOKEN + "\n")
        assert accepted.returncode == 0, accepted.stderr
        assert "A. User" in accepted.stdout and TOKEN not in accepted.stdout + accepted.stderr

        # the stored token is what a later run uses
        recipe = tmp_path / "exclusive.yaml"
        recipe.write_text(RECIPE)
        run = cli("run", str(recipe), "--mast-url", sb.url, cwd=tmp_path, env=env)
        assert run.returncode == 0, run.stdout + run.stderr


def test_a_token_no_cookie_can_carry_is_refused_without_being_echoed(tmp_path: Path, cli) -> None:
    recipe = tmp_path / "exclusive.yaml"
    recipe.write_text(RECIPE)
    halves = ("LEAKYTOKENAAAAAAAA", "LEAKYTOKENBBBBBBBB")
    with Sandbox(seed=0, tokens={TOKEN: "A. User"}) as sb:
        run = cli("run", str(recipe), "--mast-url", sb.url, "-v", cwd=tmp_path,
                  env={"MAST_API_TOKEN": "\n".join(halves)})
        assert not [r for r in sb.log.records() if r.endpoint == "whoami"], "refused before sending"
    assert run.returncode == 1, run.stdout + run.stderr
    assert "characters a cookie cannot carry" in run.stderr
    for half in halves:
        assert half not in run.stdout + run.stderr
        assert half.encode() not in _all_text_under(tmp_path)


SPY_KEYRING = '''
import os
import keyring.backend


class Spy(keyring.backend.KeyringBackend):
    """A keyring that notes every question in $SPY_LOG and holds no token."""

    priority = 1

    def get_password(self, service, username):
        with open(os.environ["SPY_LOG"], "a") as log:
            log.write(f"{service} {username}\\n")
        return None

    def set_password(self, service, username, password):
        raise NotImplementedError

    def delete_password(self, service, username):
        raise NotImplementedError
'''


def test_only_the_retrieve_stage_asks_the_keyring(tmp_path: Path, cli) -> None:
    """A run to filter needs no token, so it asks no keyring (detecting the keyring's backend is
    ~0.1 s of a run, and a locked keyring may prompt); a run that retrieves asks it once."""
    import os

    (tmp_path / "spy_keyring.py").write_text(SPY_KEYRING)
    log = tmp_path / "asked.txt"
    env = {"PYTHON_KEYRING_BACKEND": "spy_keyring.Spy", "SPY_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    recipe = tmp_path / "public.yaml"
    recipe.write_text(RECIPE.replace('proposal_id: ["1073", "4242"]', 'proposal_id: "1073"'))
    with Sandbox(seed=0) as sb:
        to_filter = cli("run", str(recipe), "--mast-url", sb.url, "--until", "filter", cwd=tmp_path, env=env)
        assert to_filter.returncode == 0, to_filter.stdout + to_filter.stderr
        assert not log.exists()
        whole = cli("run", str(recipe), "--mast-url", sb.url, cwd=tmp_path, env=env)
        assert whole.returncode == 0, whole.stdout + whole.stderr
    assert len(log.read_text().splitlines()) == 1
