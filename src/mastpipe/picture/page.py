"""The page of the picture (:mod:`mastpipe.picture`): which observations it shows, the figures
(:mod:`.figures`) beside the plan's or the run's tables, all inline in one HTML page."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.errors import UsageError
from mastpipe.picture.figures import groups_of, product_bars, sky_map, texts, time_span
from mastpipe.stages.retrieve.progress import format_bytes

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.api import PlanReport, RunOutcome

__all__ = ["plan_html", "run_html", "write_page"]


def _selected_observations(products: Table, observations: Table) -> Table:
    """The observations that list a product the filter kept (all of them when none does)."""
    if len(products) == 0 or "obsid" not in observations.colnames:
        return observations
    owner = "parent_obsid" if "parent_obsid" in products.colnames else "obsID"
    if owner not in products.colnames:
        return observations
    kept = set(texts(products[owner]))
    mask = np.array([obsid in kept for obsid in texts(observations["obsid"])], dtype=bool)
    return observations[mask] if mask.any() else observations


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
p.meta { color: #555; font-size: 12px; margin: 0 0 12px 0; }
div.page { display: flex; gap: 24px; align-items: flex-start; }
div.figures { flex: 0 0 720px; }
div.figures img { display: block; width: 720px; margin-bottom: 12px; border: 1px solid #ddd; }
div.tables { flex: 1 1 auto; min-width: 320px; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 16px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
h2 { font-size: 15px; margin: 8px 0; }
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = ()) -> str:
    numbers = set(numeric)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class=\"n\">{html.escape(str(v))}</td>" if i in numbers else
                                    f"<td>{html.escape(str(v))}</td>" for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("an HTML picture needs matplotlib, which is not installed",
                         hint="pip install 'mastpipe[html]'")


def _page(title: str, meta: str, products: Table, observations: Table, breakdown: Sequence[Any],
          tables_html: str) -> str:
    _require_matplotlib()
    selected = _selected_observations(products, observations)
    label, groups = groups_of(selected)
    images = [sky_map(selected, label, groups)]
    timeline, span = time_span(selected, label, groups)
    if timeline:
        images.append(timeline)
    bars = product_bars(breakdown)
    if bars:
        images.append(bars)
    alts = ["sky map of the selected observations' footprints", "when the observations were taken",
            "files and bytes by product type"]
    figures = "".join(f'<img alt="{alt}" src="data:image/png;base64,{data}">' for alt, data in zip(alts, images))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"meta\">{html.escape(meta)}; observations {html.escape(span)}</p>"
            f"<div class=\"page\"><div class=\"figures\">{figures}</div><div class=\"tables\">{tables_html}</div>"
            "</div></body></html>\n")


def _breakdown_table(breakdown: Sequence[Any]) -> str:
    return _table(("collection", "instrument", "product", "files", "bytes"),
                  ((g.collection, g.instrument, g.product, g.files, format_bytes(g.bytes)) for g in breakdown),
                  numeric=(3, 4))


def _generated() -> str:
    from mastpipe import __version__

    return f"mastpipe {__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def plan_html(plan: PlanReport) -> str:
    """The page for ``mastpipe plan --html``: the selection, and what a run would fetch."""
    from mastpipe.api import PlanGroup
    from mastpipe.report import plan_breakdown

    products, observations = plan.tables["filter"], plan.tables["query"]
    every = [PlanGroup(*g) for g in plan_breakdown(products, observations)]
    summary = _table(("", ""), [
        ("observations", plan.observations), ("files selected", f"{plan.files} ({format_bytes(plan.bytes)})"),
        ("to fetch", f"{plan.to_fetch} ({format_bytes(plan.bytes_to_fetch)})" if plan.mode == "download"
         else f"mode {plan.mode}: mastpipe fetches nothing itself"),
        ("already present", plan.present), ("retrieve mode", plan.mode)])
    to_fetch = "<h2>to fetch</h2>" + _breakdown_table(plan.breakdown) if plan.mode == "download" else ""
    tables = f"<h2>plan</h2>{summary}{to_fetch}<h2>selected</h2>{_breakdown_table(every)}"
    return _page(f"mastpipe plan: {plan.recipe}", f"{plan.recipe_path} against {plan.mast_url}; {_generated()}",
                 products, observations, every, tables)


def run_html(outcome: RunOutcome, recipe: str) -> str:
    """The page for ``mastpipe run --html``: the run's stages, what it fetched, the selection."""
    from mastpipe.api import PlanGroup
    from mastpipe.report import plan_breakdown

    report = outcome.report
    tables = outcome.tables
    if "filter" not in tables or "query" not in tables:
        raise UsageError("an HTML run report needs the stages up to filter", hint="drop --until, or use it with filter")
    products, observations = tables["filter"], tables["query"]
    every = [PlanGroup(*g) for g in plan_breakdown(products, observations)]
    stages = _table(("stage", "action", "rows", "seconds", "why"),
                    ((s["stage"], s["action"], "" if s["rows_out"] is None else s["rows_out"], f"{s['seconds']:.1f}",
                      "; ".join(s["reasons"])) for s in report["stages"]), numeric=(2, 3))
    retrieve = report.get("retrieve") or {}
    counts = _table(("", ""), [
        ("exit code", report["exit_code"]),
        ("fetched", (f"{retrieve.get('fetched', {}).get('files', 0)} "
                     f"({format_bytes(retrieve.get('fetched', {}).get('bytes', 0))})")),
        ("already present", retrieve.get("skipped", {}).get("files", 0)),
        ("failed", retrieve.get("failed", {}).get("files", 0))]) if retrieve else ""
    failed = retrieve.get("failed", {}).get("items", []) if retrieve else []
    failures = "<h2>failed</h2>" + _table(("dataURI", "error"), ((i["dataURI"], i["error"]) for i in failed[:200])) \
        if failed else ""
    body = f"<h2>run {html.escape(report['run_id'])}</h2>{counts}{stages}{failures}<h2>selected</h2>" \
           f"{_breakdown_table(every)}"
    return _page(f"mastpipe run: {recipe}", f"{report['recipe']['path']} against {report['mast_url']}; "
                 f"{report['seconds']:.1f} s; {_generated()}", products, observations, every, body)


def write_page(path: str | Path, text: str) -> Path:
    """Write a page atomically (a reader never sees half of it)."""
    from mastpipe.atomic import atomic_write_bytes

    target = Path(path)
    atomic_write_bytes(target, text.encode("utf-8"))
    return target
