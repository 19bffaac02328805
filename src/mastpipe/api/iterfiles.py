"""Each file as it lands: :func:`iter_files` runs a recipe and yields verified files one by one."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mastpipe.api.running import run_pipeline
from mastpipe.errors import UsageError
from mastpipe.runner import Pipeline
from mastpipe.stages.retrieve.progress import python_progress
from mastpipe.state import decoded

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger("mastpipe")


__all__ = ["ConsumerStopped", "RetrievedFile", "iter_files"]


class RetrievedFile(NamedTuple):
    """One verified file of :func:`iter_files`: its path and its product row.

    ``product`` is the filter stage's row for the file (text as ``str``): ``dataURI``,
    ``productFilename``, ``obs_id``, ``productSubGroupDescription``, ``size`` ...
    """

    path: Path
    product: Any


class ConsumerStopped(KeyboardInterrupt):
    """Raised in the download threads when the consumer of :func:`iter_files` stops early.

    A :class:`KeyboardInterrupt`, so the run ends exactly as after Ctrl-C: downloads stop
    between blocks and keep their temporaries, the per-file and run locks are released, and the
    run is recorded in the history as interrupted; the next run resumes.
    """


def iter_files(recipe: str | os.PathLike[str], *, mast_url: str | None = None,
               state_dir: str | os.PathLike[str] | None = None, refresh: bool = False, verify: bool = False,
               token: str | None = None, environ: dict[str, str] | None = None, server_id: str | None = None,
               insecure: bool = False, progress: bool = True) -> Iterator[RetrievedFile]:
    """Run a recipe and yield each file as soon as it is downloaded and verified.

    The stages run as in :func:`run` (same checkpoints, ledger, lock, report and history), in a
    background thread; files already present are yielded first, then each new one as it lands,
    so analysis starts before the last download ends. Stopping early (``break``, an exception
    in the loop, Ctrl-C, or closing the generator) stops the downloads the way Ctrl-C stops a
    run: files done stay done, partial ones keep their temporaries and resume on the next run,
    and the locks are released when the generator is closed (at once with ``break`` in
    CPython; use :func:`contextlib.closing` to be sure elsewhere).

    Parameters
    ----------
    recipe, mast_url, state_dir, refresh, verify, token, insecure, progress
        As for :func:`run`. The recipe's ``retrieve.mode`` must be ``download``.

    Yields
    ------
    RetrievedFile
        ``(path, product)``: an absolute :class:`~pathlib.Path` and the product's table row.
        Files that fail are not yielded; they are logged, and listed in the manifest and report
        as for :func:`run`.

    Raises
    ------
    UsageError
        The recipe's mode is not ``download``.
    MastpipeError
        As :func:`run`, raised from the loop.

    Examples
    --------
    >>> for path, product in mastpipe.iter_files("pipelines/jwst-1073-nircam-uncal.yaml"):   # doctest: +SKIP
    ...     with fits.open(path) as hdul:
    ...         print(product["obs_id"], hdul[1].data.shape)
    """
    import queue
    import threading

    env = dict(os.environ) if environ is None else environ
    pipeline = Pipeline(recipe, mast_url=mast_url, state_dir=state_dir, refresh=refresh, environ=env,
                        server_id=server_id, insecure=insecure)
    if pipeline.recipe.retrieve.mode != "download":
        raise UsageError(f"iter_files needs retrieve.mode download; {pipeline.recipe_path} has "
                         f"{pipeline.recipe.retrieve.mode}",
                         hint="use mastpipe.run() for curl scripts and manifests")
    landed: queue.Queue[tuple[str, str]] = queue.Queue()
    stop = threading.Event()
    index: dict[str, tuple[Path, Any]] = {}
    shown = python_progress(progress)
    outcome: dict[str, Any] = {}

    def before_retrieve(table: Table) -> None:
        from mastpipe.stages.retrieve.stage import plan_files

        settings = pipeline.recipe.retrieve
        destination = (pipeline.recipe_path.resolve().parent / settings.destination).resolve()
        tasks, _ = plan_files(table, destination, settings.layout, pipeline.mast_url)
        products = table.copy(copy_data=False)
        products.convert_bytestring_to_unicode()
        rows = {decoded(uri): i for i, uri in enumerate(table["dataURI"])} if len(table) else {}
        index.update({task.key: (Path(task.dest), products[rows[task.key]]) for task in tasks})

    def on_event(event: Any) -> None:
        if stop.is_set():
            raise ConsumerStopped()
        if shown is not None:
            shown(event)
        if event.kind in ("fetched", "skipped") and event.key:
            landed.put(("file", event.key))

    def work() -> None:
        try:
            outcome["outcome"] = run_pipeline(pipeline, verify=verify, token=token, on_event=on_event, environ=env,
                                              before_retrieve=before_retrieve)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer's thread, re-raised there
            outcome["error"] = exc
        finally:
            landed.put(("end", ""))

    thread = threading.Thread(target=work, name="mastpipe-iter-files", daemon=True)
    thread.start()
    seen: set[str] = set()
    try:
        while True:
            try:
                kind, key = landed.get(timeout=0.5)  # a timeout, so Ctrl-C is seen while waiting
            except queue.Empty:
                continue
            if kind == "end":
                break
            if key in seen or key not in index:
                continue
            seen.add(key)
            path, product = index[key]
            yield RetrievedFile(path, product)
    finally:
        stop.set()
        thread.join()
        if shown is not None:
            shown.close()
    error = outcome.get("error")
    if error is not None:
        raise error
    result = outcome["outcome"]
    failed = result.result.retrieve.failed if result.result.retrieve is not None else []
    if failed:
        log.warning("%d file(s) failed and were not yielded (listed in %s); rerun to retry them",
                    len(failed), result.result.retrieve.manifest)
