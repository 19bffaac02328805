"""`mastpipe run/plan/status/sandbox serve` as a user runs them, against the sandbox."""

from __future__ import annotations

import subprocess
from pathlib import Path

from astropy.table import Table

import mastpipe
from mastpipe.sandbox import Sandbox
from mastpipe.state import RunLock


SEED = "pipelines/jwst-1073-nircam-uncal.yaml"


def test_seed_recipe_runs_against_the_builtin_sandbox_and_reruns_fetch_nothing(workdir: Path, cli) -> None:
    first = cli("run", "--sandbox", SEED, cwd=workdir)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    manifest = mastpipe.read_manifest(workdir / "pipelines/data/jwst-1073/manifest.ecsv")
    assert len(manifest) > 0 and set(manifest["status"]) == {"fetched"}
    with Sandbox(seed=0) as sb:  # the same catalogue: every file must have its exact bytes
        for row in manifest:
            path = Path(row["path"])
            assert path.is_file() and "mastDownload/JWST/" in str(path)
            assert path.stat().st_size == sb.catalog.file_size(row["dataURI"])
            assert row["sha256"] == sb.catalog.sha256(row["dataURI"])
    assert f"{len(manifest)} fetched" in first.stdout

    second = cli("run", "--sandbox", SEED, cwd=workdir)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines() == [
        f"jwst-1073-nircam-uncal: nothing new since the previous run ({len(manifest)} products, all present)"]
    for stage in ("query", "products", "unique", "filter"):
        assert f"{stage}: reused checkpoint" in second.stderr, second.stderr


def test_plan_and_status_against_a_served_sandbox(workdir: Path, cli_in_process, cli_spawn) -> None:
    cli = cli_in_process  # the server is the separate process here
    server = cli_spawn("sandbox", "serve", "--port", "0", cwd=workdir, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        plan = cli("plan", SEED, "--mast-url", url, cwd=workdir)
        assert plan.returncode == 0, plan.stderr
        assert "to fetch" in plan.stdout and "JWST" in plan.stdout and "UNCAL" in plan.stdout
        assert not (workdir / "pipelines/data/jwst-1073/mastDownload").exists()  # plan downloads nothing
        status = cli("status", SEED, "--mast-url", url, cwd=workdir)
        assert status.returncode == 0
        assert [line.split()[1] for line in status.stdout.splitlines()[1:]] == ["current"] * 4 + ["missing"]
        assert "(0 of 14 files present, 14 to fetch (" in status.stdout  # the retrieve line
        env_status = cli("status", SEED, cwd=workdir, env={"MASTPIPE_MAST_URL": url})
        assert [line.split()[1] for line in env_status.stdout.splitlines()[1:]] == ["current"] * 4 + ["missing"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_exit_codes(workdir: Path, tmp_path: Path, cli) -> None:
    bad = workdir / "bad.yaml"
    bad.write_text("version: 1\nname: x\nquery: {a: {criteria: {obs_colection: JWST}}}\n")
    invalid = cli("run", str(bad), cwd=workdir)
    assert invalid.returncode == 2 and "did you mean 'obs_collection'" in invalid.stderr
    assert "Traceback" not in invalid.stderr

    unreachable = workdir / "unreachable.yaml"
    unreachable.write_text("version: 1\nname: unreachable\nmast: {retries: 0, timeout: 5}\n"
                           "query: {a: {criteria: {obs_collection: JWST}}}\n")
    down = cli("run", str(unreachable), "--mast-url", "http://127.0.0.1:9", cwd=workdir)
    assert down.returncode == 3, down.stderr
    assert "Traceback" not in down.stderr and "127.0.0.1:9" in down.stderr

    state = tmp_path / "locked-state"
    with RunLock(state):
        locked = cli("run", SEED, "--sandbox", "--state-dir", str(state), cwd=workdir)
    assert locked.returncode == 4 and "another run holds the lock" in locked.stderr

    with Sandbox(seed=0, faults="download.missing=*_uncal.fits") as sb:
        failed = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
        # A rerun finds nothing new, yet the same files still fail: it must say which.
        again = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed:" in failed.stdout and "404" in failed.stdout
    assert again.returncode == 1, again.stdout + again.stderr
    assert "failed:" in again.stdout and "404" in again.stdout and "all present" not in again.stdout


def test_certificates_over_https_checked_unless_insecure_and_then_loudly(workdir: Path, cli) -> None:
    import ssl

    import trustme

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    no_bundle = {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ""}
    with Sandbox(seed=0, ssl_context=context) as sb:
        refused = cli("plan", SEED, "--mast-url", sb.url, cwd=workdir, env=no_bundle)
        assert refused.returncode == 3, refused.stderr
        assert "TLS certificate of 127.0.0.1" in refused.stderr and "REQUESTS_CA_BUNDLE" in refused.stderr
        assert "--insecure" in refused.stderr and "Traceback" not in refused.stderr

        done = cli("run", SEED, "--mast-url", sb.url, "--insecure", "-q", cwd=workdir, env=no_bundle)
        assert done.returncode == 0, done.stderr
        assert "TLS certificate checking is OFF" in done.stderr  # shown even with -q
        assert "InsecureRequestWarning" not in done.stderr


def test_a_hostile_product_is_refused_alone_and_the_others_land(workdir: Path, cli_in_process) -> None:
    cli = cli_in_process  # what the run refuses, fetches and prints is the point, not its process
    hostile = {  # what a compromised or buggy server could send, each as one product row
        "mast:JWST/product/escape_uncal.fits": {"productFilename": "../../../escape_uncal.fits"},
        "mast:JWST/product/obsid_uncal.fits": {"productFilename": "obsid_uncal.fits", "obs_id": "../../.."},
        "mast:JWST/product/ctrl_uncal.fits": {"productFilename": "ctrl\x1b[31m_uncal.fits"},
    }
    with Sandbox(seed=0) as sb:
        for uri, fields in hostile.items():
            sb.catalog.add_product("87600002", dataURI=uri, productSubGroupDescription="UNCAL", **fields)
        run = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
        fetched = {r.uri for r in sb.log.records() if r.endpoint == "download"}
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert not fetched & set(hostile), "nothing is requested for a refused product"
    assert len(fetched) == 14, "the tutorial's 14 files still land"
    manifest = Table.read(workdir / "pipelines" / "data" / "jwst-1073" / "manifest.ecsv")
    by_uri = {row["dataURI"]: row for row in manifest}
    for uri in hostile:
        assert by_uri[uri]["status"] == "failed" and "refused" in by_uri[uri]["message"]
        assert uri in run.stdout  # listed among the failures
    assert {row["status"] for row in manifest if row["dataURI"] not in hostile} == {"fetched"}
    assert not list(workdir.parent.rglob("escape_uncal.fits")) and not list(workdir.rglob("obsid_uncal.fits"))


def test_a_curl_mode_rerun_does_not_claim_files_are_present(workdir: Path, cli_in_process) -> None:
    cli = cli_in_process  # what the rerun says is the point, not its process
    recipe = "pipelines/jwst-1073-nircam-uncal-curl.yaml"
    with Sandbox(seed=0) as sb:
        first = cli("run", recipe, "--mast-url", sb.url, cwd=workdir)
        again = cli("run", recipe, "--mast-url", sb.url, cwd=workdir)
        assert [r for r in sb.log.records() if r.endpoint == "download"] == []
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "nothing new since the previous run" in again.stdout
    assert "all present" not in again.stdout and "download-jwst-1073.sh" in again.stdout


def test_run_shows_the_recipe_warnings_validate_shows(workdir: Path, cli) -> None:
    recipe = workdir / "warned.yaml"
    recipe.write_text("version: 1\nname: warned\nquery:\n  a:\n    criteria: {obs_collection: JWST, proposal_id: '1073'}\n"
                      "retrieve:\n  mode: manifest\n  in_flight: 8\n")
    run = cli("run", str(recipe), "--sandbox", "-q", cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert f"{recipe}:8:3: retrieve.in_flight: warning: retrieve.in_flight has no effect with mode manifest" in run.stderr
