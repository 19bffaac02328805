"""The figures of the picture (:mod:`mastpipe.picture`), each a base64 PNG: the footprints on the
sky (:func:`sky_map`), when the observations were taken (:func:`time_span`), files and bytes by
product type (:func:`product_bars`), and the footprints read from ``s_region``
(:func:`footprints`).

They are drawn by matplotlib through :class:`matplotlib.figure.Figure` and the Agg canvas
directly, never ``pyplot``, so drawing changes no global state (a notebook's backend stays as it
was). Ten thousand observations stay readable: footprints are drawn as one translucent
collection, projected here in one vectorised pass (:func:`_mollweide`), small ones get a dot at
their centre, the legend keeps the :data:`MAX_GROUPS` largest groups (the rest is "other"), and
the time panel is a stacked histogram rather than one bar per observation.
"""

from __future__ import annotations

import base64
import datetime
import io
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.stages.retrieve.progress import format_bytes
from mastpipe.state import decoded_column

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["MAX_GROUPS", "footprints", "groups_of", "product_bars", "sky_map", "texts", "time_span"]

#: Groups named in the legend; the others are drawn in grey as "other".
MAX_GROUPS = 10
_MJD0 = datetime.datetime(1858, 11, 17)
_SHAPES = {"POLYGON", "CIRCLE"}


def footprints(s_region: str) -> list[np.ndarray]:
    """The shapes of an ``s_region`` string (STC-S) as arrays of (ra, dec) vertices in degrees.

    ``POLYGON [frame] ra1 dec1 ra2 dec2 ...`` and ``CIRCLE [frame] ra dec radius`` are read
    (several shapes may follow one another, as MAST writes multi-detector footprints); a circle
    becomes a 32-sided polygon. Anything unreadable gives no shape rather than an error: a
    picture must not fail for one odd footprint.
    """
    shapes: list[np.ndarray] = []
    kind: str | None = None
    numbers: list[float] = []

    def close() -> None:
        if kind == "POLYGON" and len(numbers) >= 6 and len(numbers) % 2 == 0:
            shapes.append(np.array(numbers, dtype=float).reshape(-1, 2))
        elif kind == "CIRCLE" and len(numbers) == 3:
            ra, dec, radius = numbers
            angle = np.linspace(0, 2 * np.pi, 33)
            stretch = 1 / max(math.cos(math.radians(dec)), 1e-3)
            shapes.append(np.column_stack([ra + radius * stretch * np.cos(angle), dec + radius * np.sin(angle)]))

    for token in str(s_region).replace(",", " ").split():
        upper = token.upper()
        if upper in _SHAPES:
            close()
            kind, numbers = upper, []
            continue
        try:
            numbers.append(float(token))
        except ValueError:  # a frame (ICRS, J2000 ...) or a shape we do not draw
            if re.fullmatch(r"[A-Z]+", upper) and upper not in ("ICRS", "J2000", "FK5", "FK4", "GALACTIC",
                                                                 "ECLIPTIC", "UNKNOWNFRAME", "GEOCENTER",
                                                                 "BARYCENTER", "TOPOCENTER"):
                close()
                kind, numbers = None, []
    close()
    return [shape for shape in shapes if np.all(np.isfinite(shape))]


def texts(column: Any) -> list[str]:
    """A column's values as text (bytes decoded)."""
    return decoded_column(column)


def groups_of(observations: Table) -> tuple[str, list[str]]:
    """What colours the map: (label, one value per observation): the instrument, or the query
    when the selection has one instrument and several queries."""
    instruments = texts(observations["instrument_name"]) if "instrument_name" in observations.colnames else []
    queries = texts(observations["queries"]) if "queries" in observations.colnames else []
    if instruments and (len(set(instruments)) > 1 or len(set(queries)) <= 1):
        return "instrument", instruments
    if queries:
        return "query", queries
    return "instrument", instruments or ["?"] * len(observations)


def _palette(values: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The groups to name (largest first, at most :data:`MAX_GROUPS`) and a colour for each."""
    from matplotlib import colormaps

    counts = Counter(values)
    named = [name for name, _ in counts.most_common(MAX_GROUPS)]
    cmap = colormaps["tab10"]
    colours: dict[str, Any] = {name: cmap(i % 10) for i, name in enumerate(named)}
    return named, colours


def _png(figure: Any) -> str:
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # layout and date-tick notes are matplotlib's, not the user's
        warnings.simplefilter("ignore", UserWarning)
        figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _tight(figure: Any) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        figure.tight_layout()


def _unwrap(ra: np.ndarray, centre: float) -> np.ndarray:
    """RA in degrees, moved by whole turns to lie within 180 degrees of ``centre``."""
    return (ra - centre + 180.0) % 360.0 - 180.0 + centre


def _mollweide(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mollweide projection of longitudes and latitudes in radians, vectorised.

    Done here rather than with matplotlib's ``projection="mollweide"``, which transforms every
    path on its own at draw time: minutes for 10,000 footprints instead of milliseconds.
    """
    theta = np.asarray(lat, dtype=float).copy()
    target = np.pi * np.sin(lat)
    for _ in range(12):  # Newton on 2θ + sin 2θ = π sin φ; converges in a few steps
        step = (2 * theta + np.sin(2 * theta) - target) / np.maximum(2 + 2 * np.cos(2 * theta), 1e-9)
        theta -= step
    return 2 * math.sqrt(2) / np.pi * lon * np.cos(theta), math.sqrt(2) * np.sin(theta)


def _graticule(axes: Any) -> None:
    """The sky's outline, lines every 30 degrees and their labels, on a Mollweide map."""
    grey = {"color": "0.75", "linewidth": 0.5, "zorder": 0}
    dec = np.radians(np.linspace(-90, 90, 91))
    for ra in range(-180, 181, 30):
        x, y = _mollweide(np.full_like(dec, -np.radians(ra)), dec)
        axes.plot(x, y, **({**grey, "color": "0.3", "linewidth": 0.8} if abs(ra) == 180 else grey))
        if abs(ra) < 180:
            axes.text(x[45], 0.02, f"{ra % 360}°", fontsize=6, color="0.4", ha="center")
    ra_line = np.radians(np.linspace(-180, 180, 181))
    for value in range(-60, 61, 30):
        x, y = _mollweide(ra_line, np.full_like(ra_line, np.radians(value)))
        axes.plot(x, y, **grey)
        axes.text(x[0] - 0.05, y[0], f"{value:+d}°", fontsize=6, color="0.4", ha="right", va="center")
    axes.set_xlim(2.95, -2.95)
    axes.set_ylim(-1.5, 1.5)
    axes.set_aspect("equal")
    axes.set_axis_off()


def sky_map(observations: Table, label: str, groups: Sequence[str]) -> str:
    """The sky map as a base64 PNG: every footprint, coloured by group."""
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    named, colours = _palette(groups)
    shapes: list[np.ndarray] = []
    owners: list[str] = []
    regions = texts(observations["s_region"]) if "s_region" in observations.colnames else [""] * len(observations)
    ras = np.asarray(observations["s_ra"], dtype=float) if "s_ra" in observations.colnames else None
    decs = np.asarray(observations["s_dec"], dtype=float) if "s_dec" in observations.colnames else None
    for index, (region, group) in enumerate(zip(regions, groups)):
        found = footprints(region)
        if not found and ras is not None and decs is not None and np.isfinite(ras[index]) and np.isfinite(decs[index]):
            found = footprints(f"CIRCLE {ras[index]} {decs[index]} 0.01")
        shapes += found
        owners += [group] * len(found)
    figure = Figure(figsize=(7.2, 5.4))
    if not shapes:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "no footprints (s_region) in the selection", ha="center", va="center")
        axes.set_axis_off()
        return _png(figure)
    points = np.concatenate(shapes)
    centre_ra = float(np.degrees(np.angle(np.mean(np.exp(1j * np.radians(points[:, 0]))))))
    shapes = [np.column_stack([_unwrap(s[:, 0], centre_ra), s[:, 1]]) for s in shapes]
    points = np.concatenate(shapes)
    ra_span = float(np.ptp(points[:, 0]))
    dec_span = float(np.ptp(points[:, 1]))
    whole_sky = ra_span > 90 or dec_span > 60
    faces = [(*colours[o][:3], 0.25) if o in colours else (0.5, 0.5, 0.5, 0.15) for o in owners]
    edges = [(*colours[o][:3], 0.8) if o in colours else (0.5, 0.5, 0.5, 0.5) for o in owners]
    axes = figure.add_subplot()
    if whole_sky:  # Mollweide, RA increasing to the left as on the sky, projected here (see _mollweide)
        wrapped = [np.column_stack([((s[:, 0] + 180.0) % 360.0) - 180.0, s[:, 1]]) for s in shapes]
        keep = [i for i, w in enumerate(wrapped) if np.ptp(w[:, 0]) <= 180]  # across RA 180 it would smear
        owners = [owners[i] for i in keep]
        faces = [faces[i] for i in keep]
        edges = [edges[i] for i in keep]
        every = np.concatenate([wrapped[i] for i in keep])  # projected at once: one vectorised pass
        x, y = _mollweide(-np.radians(every[:, 0]), np.radians(every[:, 1]))
        cuts = np.cumsum([len(wrapped[i]) for i in keep])[:-1]
        drawn = [np.column_stack(pair) for pair in zip(np.split(x, cuts), np.split(y, cuts))]
        _graticule(axes)
        extent = 4 * math.sqrt(2)
    else:
        drawn = shapes
        axes.set_aspect(1 / max(math.cos(math.radians(float(np.mean(points[:, 1])))), 1e-3))
        axes.set_xlabel("right ascension (deg)")
        axes.set_ylabel("declination (deg)")
        axes.grid(True, alpha=0.3)
        extent = max(ra_span, dec_span, 1e-6)
    # autolim=False: limits are set below from the vertices; matplotlib would transform every path
    collection = PolyCollection(drawn, facecolors=faces[: len(drawn)], edgecolors=edges[: len(drawn)],
                                linewidths=0.4 if len(drawn) > 2000 else 0.8)
    axes.add_collection(collection, autolim=False)
    # footprints too small to see at this scale get a dot at their centre
    sizes = np.array([max(np.ptp(d[:, 0]), np.ptp(d[:, 1])) for d in drawn])
    small = sizes < extent / 150
    if small.any():
        centres = np.array([d.mean(axis=0) for d in drawn])[small]
        axes.scatter(centres[:, 0], centres[:, 1], s=4, c=[edges[i] for i in np.flatnonzero(small)], linewidths=0)
    if not whole_sky:
        pad = 0.05 * extent
        axes.set_xlim(points[:, 0].max() + pad, points[:, 0].min() - pad)
        axes.set_ylim(points[:, 1].min() - pad, points[:, 1].max() + pad)
    counts = Counter(groups)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colours[name], label=f"{name} ({counts[name]})") for name in named]
    rest = len(groups) - sum(counts[name] for name in named)
    if rest:
        handles.append(Patch(facecolor=(0.5, 0.5, 0.5), label=f"other ({rest})"))
    axes.legend(handles=handles, title=label, fontsize=7, title_fontsize=8, loc="upper right", framealpha=0.8)
    axes.set_title(f"{len(observations)} observations with selected products, {len(drawn)} footprints", fontsize=10)
    _tight(figure)
    return _png(figure)


def time_span(observations: Table, label: str, groups: Sequence[str]) -> tuple[str | None, str]:
    """When the observations were taken: a stacked histogram of their start dates (base64 PNG,
    or None without ``t_min``) and the span as text."""
    from matplotlib import dates as matplotlib_dates
    from matplotlib.figure import Figure

    dates: Any = matplotlib_dates  # its functions are untyped
    if "t_min" not in observations.colnames or len(observations) == 0:
        return None, "no observation times"
    start: np.ndarray = np.ma.filled(np.ma.asarray(observations["t_min"], dtype=float), np.nan)
    end = np.ma.filled(np.ma.asarray(observations["t_max"], dtype=float), np.nan) \
        if "t_max" in observations.colnames else start
    ok = np.isfinite(start)
    if not ok.any():
        return None, "no observation times"
    first = _MJD0 + datetime.timedelta(days=float(np.nanmin(start)))
    last = _MJD0 + datetime.timedelta(days=float(np.nanmax(np.where(np.isfinite(end), end, start))))
    span = f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
    named, colours = _palette(groups)
    base = dates.date2num(_MJD0)
    values = [base + start[ok & np.array([g == name for g in groups])] for name in named]
    others = ok & np.array([g not in colours for g in groups])
    labels = list(named)
    colour_list = [colours[name] for name in named]
    if others.any():
        values.append(base + start[others])
        labels.append("other")
        colour_list.append((0.5, 0.5, 0.5, 1.0))
    figure = Figure(figsize=(7.2, 2.6))
    axes = figure.add_subplot()
    low, high = float(np.nanmin(start[ok])) + base, float(np.nanmax(start[ok])) + base
    bins: Any = np.linspace(low - 0.5, high + 0.5, 41) if high - low > 1 else 10
    axes.hist(values, bins=bins, stacked=True, color=colour_list, label=labels)
    axes.xaxis.set_major_locator(dates.AutoDateLocator(maxticks=8))
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(axes.xaxis.get_major_locator()))
    axes.set_ylabel("observations")
    axes.set_title(f"start of each observation ({span})", fontsize=10)
    _tight(figure)
    return _png(figure), span


def product_bars(breakdown: Sequence[Any]) -> str | None:
    """Files and bytes by product type (summed over collections and instruments), base64 PNG."""
    from matplotlib.figure import Figure

    files: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for group in breakdown:
        files[group.product] += group.files
        sizes[group.product] += group.bytes
    if not files:
        return None
    kinds = [kind for kind, _ in sizes.most_common(15)][::-1]
    figure = Figure(figsize=(7.2, 1.4 + 0.32 * len(kinds)))
    axes = figure.add_subplot()
    axes.barh(kinds, [sizes[k] for k in kinds], color="#4c72b0")
    for index, kind in enumerate(kinds):
        axes.text(sizes[kind], index, f"  {files[kind]} files, {format_bytes(sizes[kind])}", va="center", fontsize=8)
    axes.set_xlabel("bytes")
    axes.set_xlim(0, max(sizes.values()) * 1.6 or 1)
    axes.set_title("files and bytes by product type", fontsize=10)
    _tight(figure)
    return _png(figure)
