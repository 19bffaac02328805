"""What ``plan`` remembers of its answer (``plan.json`` in the state directory), so that a plan
over checkpoints unchanged since reads no table: at a million products, reading every
checkpoint through astropy and grouping the files was most of plan's time.

Only in the modes without a ledger (manifest, curl), where the answer depends on the
checkpoints and the recipe alone (and the files' outlook, which
:func:`mastpipe.stages.retrieve.outlook.status_outlook` remembers and checks by itself). The
answer is reused only while every table stage is current (as ``run`` would judge it), the
recipe is the same, and each checkpoint's table file has the size, change time and inode it
had: the trust ``status`` gives the filter checkpoint's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.atomic import atomic_write_bytes
from mastpipe.memory import give_back_freed_memory

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.runner import Pipeline

__all__ = ["LazyTables", "plan_key", "plan_totals", "remember_filtered", "remember_plan", "remember_run",
           "remembered_plan"]

log = logging.getLogger(__name__)

STAGES = ("query", "products", "unique", "filter")


class LazyTables(Mapping[str, "Table"]):
    """Each stage's table, read from the checkpoints only when first asked for (``load``
    returns them all)."""

    def __init__(self, load: Callable[[], Mapping[str, Table]]) -> None:
        self._load = load
        self._tables: Mapping[str, Table] | None = None

    def _all(self) -> Mapping[str, Table]:
        if self._tables is None:
            self._tables = dict(self._load())
        return self._tables

    def __getitem__(self, stage: str) -> Table:
        return self._all()[stage]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def plan_key(pipeline: Pipeline) -> dict[str, Any] | None:
    """What a remembered plan of ``pipeline`` is valid for, or None when it cannot be (a stage
    would be computed, ``--refresh``, a mode with a ledger, a checkpoint file missing)."""
    import mastpipe

    if pipeline.refresh or pipeline.recipe.retrieve.mode == "download":
        return None
    if any(status.state != "current" for status in pipeline.status()):
        return None
    checkpoints: dict[str, Any] = {}
    for stage in STAGES:
        sidecar = pipeline.checkpoints.sidecar(stage)
        if sidecar is None:
            return None
        try:
            stats = [os.stat(path) for path in pipeline.checkpoints.files(stage, sidecar)]
        except OSError:
            return None
        checkpoints[stage] = [sidecar.digest, sidecar.rows] + [[st.st_size, st.st_mtime_ns, st.st_ino] for st in stats]
    return {"version": mastpipe.__version__, "mast_url": pipeline.mast_url, "server": pipeline.server_id,
            "recipe": pipeline.recipe.model_dump(mode="json"), "checkpoints": checkpoints}


def remembered_plan(pipeline: Pipeline, key: dict[str, Any]) -> dict[str, Any] | None:
    """The plan remembered for ``key`` (observations, bytes, breakdown), or None."""
    try:
        data = json.loads(pipeline.state.plan.read_text())
        if data["key"] != key:
            return None
        answer = data["plan"]
        return {"observations": int(answer["observations"]), "bytes": int(answer["bytes"]),
                "breakdown": [(str(c), str(i), str(k), int(n), int(b)) for c, i, k, n, b in answer["breakdown"]]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_plan(pipeline: Pipeline, key: dict[str, Any], observations: int, total: int,
                  breakdown: list[tuple[str, str, str, int, int]]) -> None:
    """Keep plan's answer for ``key`` (what :func:`plan_key` gave before the checkpoints were read)."""
    try:
        atomic_write_bytes(pipeline.state.plan, json.dumps({"key": key, "plan": {
            "observations": observations, "bytes": total, "breakdown": [list(group) for group in breakdown]}}).encode())
    except OSError as exc:  # a read-only state directory: plan still answers
        log.debug("could not remember the plan in %s: %s", pipeline.state.plan, exc)


def plan_totals(products: Table, observations: Table,
                breakdown: bool = True) -> tuple[int, list[tuple[str, str, str, int, int]]]:
    """The bytes of every file ``products`` lists and (unless not ``breakdown``) their breakdown
    (see :func:`mastpipe.report.plan_breakdown`): a plan's answer in the modes without a ledger."""
    from mastpipe.report import plan_breakdown

    total = int(np.maximum(np.ma.filled(products["size"], 0).astype(np.int64), 0).sum()) if len(products) else 0
    return total, plan_breakdown(products, observations) if breakdown else []


def remember_run(pipeline: Pipeline, tables: Mapping[str, Table]) -> None:
    """After a run in a mode without a ledger, leave the answer the next ``plan`` would give, so
    it reads no table either (``tables``: the run's, every stage up to filter)."""
    key = plan_key(pipeline)
    products, observations = tables.get("filter"), tables.get("query")
    if key is None or products is None or observations is None or not len(products):
        return
    if not {"size", "obs_collection"} <= set(products.colnames) or \
            not {"parent_obsid", "obsID"} & set(products.colnames):  # plan would say what is amiss
        return
    remember_plan(pipeline, key, len(observations), *plan_totals(products, observations))


def remember_filtered(pipeline: Pipeline, tables: Mapping[str, Table]) -> None:
    """After ``run --until filter``, leave what the next ``status`` and ``plan`` would judge
    from the filter checkpoint (the outlook, the plan), from the tables the run holds: at a
    million products, reading the checkpoints back and hashing them was most of the first
    ``status``'s and ``plan``'s time. In download mode only when nothing is on disk yet (every
    file to fetch, found a column at a time; anything else is judged by ``status`` itself).
    Anything amiss (two products on one path) is left for them to say."""
    from mastpipe.errors import MastpipeError

    download = pipeline.recipe.retrieve.mode == "download"
    try:  # remembers the outlook (outlook.json; download mode: files.npz, when nothing is on disk yet)
        pipeline.retrieve_status(tables["filter"], judge=not download)
    except MastpipeError as error:
        log.debug("outlook not remembered: %s", error)
        return
    if download:
        return
    give_back_freed_memory()  # judging the files' paths freed a few columns' worth
    key = plan_key(pipeline)
    if key is not None and remembered_plan(pipeline, key) is None:
        remember_run(pipeline, tables)
