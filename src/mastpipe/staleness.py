"""Whether a stage's checkpoint is current, and if not, why (dvc-style reasons).

A stage's fingerprint hashes its normalised recipe section (:meth:`Staleness.section`: key order
and comments never matter, execution knobs are left out) with the digest of its input table. A
checkpoint whose fingerprint differs is stale, and every reason is said: "recipe section `filter`
changed", "input changed", "MAST server changed (...)", "--refresh", "no checkpoint" ...
``sections.json`` keeps the section each stage last ran with, so a changed section can be told
from a changed input.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Collection

from mastpipe.recipe.models import Recipe
from mastpipe.recipe.quantities import parse_duration
from mastpipe.stages import STAGES
from mastpipe.state import Checkpoints, Sidecar, StateDir, fingerprint

__all__ = ["TABLE_STAGES", "StageStatus", "Staleness", "query_section", "server_label"]

TABLE_STAGES = STAGES[:-1]  # retrieve's state is the ledger, not a table

#: Key of ``sections.json`` holding the URL each stage last ran against (not a stage name).
URLS_KEY = "mast_urls"


@dataclass
class StageStatus:
    stage: str
    state: str  # "current" | "stale" | "missing" (mastpipe.typing.StageState)
    reasons: list[str]
    rows: int | None
    finished: float | None


def server_label(server_id: Any, url: str | None) -> str:
    """A server as a stale reason names it: its URL, and its identity when that is not the URL.

    Parameters
    ----------
    server_id : str or None
        What fingerprints hold (:attr:`mastpipe.runner.Pipeline.server_id`); None for state
        written before sections recorded a server.
    url : str or None
        The URL it was reached at, when known.

    Returns
    -------
    str
        ``https://mast.stsci.edu``, or ``mastpipe-sandbox:seed=0 at http://127.0.0.1:8080`` for
        the sandbox, whose URL changes every run while its identity does not.
    """
    if server_id is None:
        return url or "an unrecorded server"
    if url is None or url == server_id:
        return str(server_id)
    return f"{server_id} at {url}"


def query_section(recipe: Recipe) -> dict[str, Any]:
    """The recipe's queries as fingerprints see them. The keys of mission searches are left out
    of CAOM searches, which do not use them, so checkpoints made before mission searches existed
    stay current. A query's ``expect`` is left out too: it judges the result, it does not change
    it, so tightening a bound must not send the search to MAST again."""
    queries: dict[str, Any] = recipe.model_dump(mode="json")["query"]
    for query in queries.values():
        query.pop("expect", None)
        if query.get("mission") is None:
            for key in ("mission", "conditions", "select_cols"):
                query.pop(key, None)
        elif query.get("criteria") is None:
            query.pop("criteria", None)
    return queries


@dataclass(frozen=True)
class Staleness:
    """The judge of a pipeline's checkpoints: what each stage's fingerprint covers, and why a
    checkpoint cannot be reused.

    Parameters
    ----------
    recipe : Recipe
    state : StateDir
        Where ``sections.json`` lives.
    server_id : str
        What identifies the server in fingerprints (see :class:`mastpipe.runner.Pipeline`).
    mast_url : str
        The URL it is reached at, recorded beside the sections of the stages run against it.
    refresh : bool
        ``--refresh``: query and products are stale whatever their checkpoints say.
    """

    recipe: Recipe
    state: StateDir
    server_id: str
    mast_url: str
    refresh: bool = False

    def section(self, stage: str) -> dict[str, Any]:
        """The recipe settings a stage's result depends on (execution knobs excluded)."""
        r = self.recipe
        sections: dict[str, dict[str, Any]] = {
            "query": {"query": query_section(r), "mast": self.server_id},
            "products": {"mast": self.server_id},
            "unique": r.unique.model_dump(mode="json"),
            "filter": r.filter.model_dump(mode="json"),
            "retrieve": r.retrieve.model_dump(mode="json"),
        }
        return sections[stage]

    def reasons(self, stage: str, sidecar: Sidecar | None, fp: str, forced: list[str]) -> list[str]:
        """Why ``stage``'s checkpoint (``sidecar``) is not current for fingerprint ``fp``, after the
        ``forced`` reasons (:meth:`forced`); empty when it can be reused."""
        if sidecar is None:
            return ["no checkpoint"] + forced
        reasons = list(forced)
        if sidecar.fingerprint != fp:
            recorded = self.previous_sections()
            previous = recorded.get(stage)
            current = self.section(stage)
            if previous is None or previous == current:
                reasons.append("input changed")
                return reasons
            # The server is part of the query and products sections (see section()), but it is
            # not the recipe's doing: name it apart, or `status` blames a recipe nobody edited.
            if isinstance(previous, dict) and "mast" in current and previous.get("mast") != current["mast"]:
                before = server_label(previous.get("mast"), recorded.get(URLS_KEY, {}).get(stage))
                # This side by its identity alone: `status --sandbox` starts no server, so its
                # URL would only be the recipe's default.
                reasons.append(f"MAST server changed ({before} → {server_label(current['mast'], None)})")
                previous = {key: value for key, value in previous.items() if key != "mast"}
                current = {key: value for key, value in current.items() if key != "mast"}
            if previous != current:
                reasons.append(f"recipe section `{stage}` changed")
        return reasons

    def forced(self, stage: str, from_stage: str | None, sidecar: Sidecar | None) -> list[str]:
        """Reasons to run ``stage`` whatever its fingerprint: ``--from``, ``--refresh``, an old query."""
        forced = []
        if from_stage is not None and STAGES.index(stage) >= STAGES.index(from_stage):
            forced.append(f"--from {from_stage}")
        if self.refresh and stage in ("query", "products"):
            forced.append("--refresh")
        age = self.recipe.state.query_max_age
        if stage == "query" and age and sidecar is not None and time.time() - sidecar.finished > parse_duration(age):
            forced.append(f"query results older than state.query_max_age ({age})")
        return forced

    def previous_sections(self) -> dict[str, Any]:
        """``sections.json`` as last saved; empty when missing or unreadable."""
        path = self.state.sections
        try:
            sections: dict[str, Any] = json.loads(path.read_text())
            return sections
        except (OSError, ValueError):
            return {}

    def save_sections(self, ran: list[str], computed: Collection[str]) -> None:
        """Remember the sections of the stages that ran, so a later run can tell a changed
        section from a changed input; stages not run keep the section they last ran with.

        The URL each stage in ``computed`` was run against is kept beside them (``mast_urls``):
        the sections name the server by :attr:`server_id`, which for the sandbox is no URL at
        all, and a reason saying the server changed should say from where. A reused checkpoint
        keeps the URL it was made with."""
        from mastpipe.atomic import atomic_write_bytes

        previous = self.previous_sections()
        urls = {**previous.get(URLS_KEY, {}), **dict.fromkeys(computed, self.mast_url)}
        sections = {**previous, **{stage: self.section(stage) for stage in ran}, URLS_KEY: urls}
        atomic_write_bytes(self.state.sections, json.dumps(sections, sort_keys=True, indent=1).encode())

    def status(self, checkpoints: Checkpoints) -> list[StageStatus]:
        """Each table stage's checkpoint: current, stale (and why) or missing. Contacts no server."""
        statuses = []
        digest = ""
        stale_upstream = False
        for stage in TABLE_STAGES:
            sidecar = checkpoints.sidecar(stage)
            fp = fingerprint(stage, self.section(stage), digest)
            if sidecar is None:
                statuses.append(StageStatus(stage, "missing", ["no checkpoint"], None, None))
                stale_upstream = True
                continue
            reasons = self.reasons(stage, sidecar, fp, self.forced(stage, None, sidecar))
            if stale_upstream and not reasons:
                reasons = ["an earlier stage will rerun"]
            statuses.append(StageStatus(stage, "stale" if reasons else "current", reasons, sidecar.rows, sidecar.finished))
            stale_upstream = stale_upstream or bool(reasons)
            digest = sidecar.digest
        return statuses
