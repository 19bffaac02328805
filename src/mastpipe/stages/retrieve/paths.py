"""Where each product lands on disk, and the checks that keep it inside the destination.

Product names and ids come from the server, so every value that becomes part of a path is treated
as hostile: ``..``, absolute paths, separators, backslashes, drive letters, NUL and control
characters are refused with :class:`~mastpipe.errors.UnsafePathError` naming the product and the
field. The final path must also resolve (symlinks included) inside the destination, so a symlink
planted in the tree cannot redirect a write elsewhere.

Layouts
-------
``"astroquery"``
    ``mastDownload/<obs_collection>/<obs_id>/<productFilename>``, exactly what
    ``Observations.download_products`` writes (no case change), so earlier manual downloads are
    found and adopted.
``"flat"``
    ``<productFilename>``.
template
    Any other string is a :meth:`str.format` template over product columns, for example
    ``"{obs_collection}/{proposal_id}/{productFilename}"``. Literal ``/`` in the template
    separates directories; substituted values must each be a single safe component.
"""

from __future__ import annotations

import os
import re
import shutil
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastpipe.atomic import NAME_OVERHEAD
from mastpipe.errors import NotWritableError, TransferError, UnsafePathError, UsageError

if TYPE_CHECKING:
    from mastpipe.recipe.models import Retrieve

__all__ = [
    "ASTROQUERY_TEMPLATE",
    "FLAT_TEMPLATE",
    "check_collisions",
    "check_component",
    "check_outputs",
    "check_free_space",
    "describe_filesystem",
    "free_bytes",
    "output_dirs",
    "product_path",
    "relative_product_path",
]

ASTROQUERY_TEMPLATE = "mastDownload/{obs_collection}/{obs_id}/{productFilename}"
#: What astroquery's ``MastMissions.download_products`` writes: ``mastDownload/jwst/<dataset>/<file>``.
MISSION_ASTROQUERY_TEMPLATE = "mastDownload/{mission}/{obs_id}/{productFilename}"
FLAT_TEMPLATE = "{productFilename}"
_LAYOUTS = {"astroquery": ASTROQUERY_TEMPLATE, "flat": FLAT_TEMPLATE}
_DRIVE = re.compile(r"^[A-Za-z]:")
# 224: the longest temporary's name (the atomic write of ``.<name>.part.json``) must fit NAME_MAX
MAX_NAME_BYTES = 255 - NAME_OVERHEAD - len("..part.json")


def _mission(row: Any) -> bool:
    """Whether ``row`` is a product of a mission search (it has a ``mission`` value)."""
    try:
        value = row["mission"]
    except (KeyError, IndexError, ValueError):
        return False
    return not _is_masked(value) and bool(str(value.decode() if isinstance(value, bytes) else value).strip())


def _product_name(row: Any) -> str:
    """How errors name a product: its dataURI when present, else its filename."""
    for column in ("dataURI", "productFilename", "obs_id"):
        try:
            value = row[column]
        except (KeyError, IndexError, ValueError):
            continue
        if value is not None and str(value):
            return repr(str(value))
    return "<unnamed product>"


def _is_masked(value: Any) -> bool:
    """True for a masked table cell (astropy/numpy), which prints as ``--``."""
    if not hasattr(value, "mask"):
        return False
    import numpy as np  # only reached for masked values, so plain dicts never import numpy

    return bool(np.ma.is_masked(value))


def check_component(value: Any, *, product: str, field: str) -> str:
    """Return ``value`` as a path component, or refuse it.

    Parameters
    ----------
    value : object
        A product column's value (str, number, numpy scalar).
    product : str
        How to name the product in the error (e.g. its dataURI).
    field : str
        The column the value came from, named in the error.

    Returns
    -------
    str
        The value, unchanged, as a string.

    Raises
    ------
    UnsafePathError
        When the value is empty/masked, ``.`` or ``..``, contains ``/`` or ``\\``, starts with a
        drive letter, or contains NUL or any control character.
    """
    if value is None or _is_masked(value):
        raise UnsafePathError(f"product {product}: {field} is missing, cannot build a path")
    text = str(value)
    why = component_problem(text)
    if why is not None:
        raise UnsafePathError(f"product {product}: unsafe {field} {text!r}: {why}")
    return text


#: Unicode's control characters (category Cc), all of them: one C-level search, not a lookup
#: per character (which at a million products was most of `plan`'s time).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def component_problem(text: str) -> str | None:
    """Why ``text`` cannot be one component of a path inside the destination, or None.

    The one rule for product values and for a layout template's own directory names (which
    the recipe validator checks with it, so a layout it accepts always builds a path).
    """
    if not text.strip():
        return "empty"
    if text in (".", ".."):
        return "a relative directory reference"
    if "/" in text:
        return "contains '/' (absolute path or directories)"
    if "\\" in text:
        return "contains a backslash"
    if _DRIVE.match(text):
        return "starts with a drive letter"
    if _CONTROL.search(text):  # NUL, \n, \r, ESC, DEL ...
        return "contains a NUL or control character"
    return None


def _template_fields(template: str) -> list[str]:
    fields = []
    for _, name, _, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or not name.isidentifier() or conversion:
            raise UsageError(
                f"path layout {template!r}: use plain column names such as {{obs_id}}",
            )
        fields.append(name)
    return fields


def relative_product_path(row: Mapping[str, Any] | Any, layout: str = "astroquery") -> Path:
    """The product's path relative to the destination, every component checked
    (:func:`_relative_parts` as a Path).

    Parameters
    ----------
    row : dict or astropy.table.Row
        A product row with at least the columns the layout uses.
    layout : str
        ``"astroquery"``, ``"flat"`` or a template (see module docstring).

    Returns
    -------
    pathlib.Path
        A relative path with no ``..`` and no absolute component.

    Raises
    ------
    UnsafePathError
        When a value would escape the destination.
    UsageError
        When the template is malformed or names a column the row lacks.
    """
    return Path(*_relative_parts(row, layout))


def _relative_parts(row: Mapping[str, Any] | Any, layout: str) -> list[str]:
    template = _LAYOUTS.get(layout, layout)
    if layout == "astroquery" and _mission(row):
        template = MISSION_ASTROQUERY_TEMPLATE
    product = _product_name(row)
    values = {}
    for name in _template_fields(template):
        try:
            raw = row[name]
        except (KeyError, IndexError, ValueError):
            raise UsageError(
                f"path layout {template!r} uses column {name!r}, which product {product} lacks"
            ) from None
        values[name] = check_component(raw, product=product, field=name)
    relative = template.format(**values)
    parts = relative.split("/")
    # The template's own literals are checked too: "{obs_id}/../x" is as unsafe as a hostile id.
    for part in parts:
        check_component(part, product=product, field=f"layout {template!r}")
    name_bytes = len(parts[-1].encode("utf-8", "surrogateescape"))
    if name_bytes > MAX_NAME_BYTES:
        # Its temporaries (..<name>.part.json.<pid>.<random>.tmp) must fit the 255-byte limit
        # of file names.
        raise UnsafePathError(f"product {product}: file name is {name_bytes} bytes long; at most "
                              f"{MAX_NAME_BYTES} fit beside the temporaries a download needs")
    return parts


def product_path(row: Mapping[str, Any] | Any, destination: Path | str, layout: str = "astroquery",
                 resolved: dict[str, str] | None = None) -> Path:
    """The absolute path where a product is written, guaranteed inside ``destination``.

    Parameters
    ----------
    row : dict or astropy.table.Row
        A product row.
    destination : path-like
        The destination directory (need not exist yet).
    layout : str
        See :func:`relative_product_path`.
    resolved : dict, optional
        Directories already resolved (filled in here): for many products, each directory is
        resolved once, and only the file itself is looked at for each (a symlink there is
        followed as ``resolve()`` follows it).

    Returns
    -------
    pathlib.Path
        ``destination / relative`` with ``destination`` made absolute (symlinks inside ``destination``'s own path are
        kept as the user wrote them).

    Raises
    ------
    UnsafePathError
        When a component is unsafe, or an existing symlink inside the destination would carry
        the file outside it.
    """
    if resolved is not None:
        return _product_path_cached(row, destination, layout, resolved)
    root = Path(os.path.abspath(destination))
    target = root / relative_product_path(row, layout)
    # resolve() follows any symlink already planted in the tree: if the real location leaves the
    # (resolved) destination, writing there would land outside it.
    real_root, real_target = root.resolve(), target.resolve()
    if real_target != real_root and real_root not in real_target.parents:
        raise UnsafePathError(
            f"product {_product_name(row)}: {target} resolves to {real_target}, outside the "
            f"destination {real_root} (a symlink leads out of it)"
        )
    return target


def _product_path_cached(row: Mapping[str, Any] | Any, dest: Path | str, layout: str,
                         resolved: dict[str, str]) -> Path:
    """:func:`product_path` for many products: the same checks on strings, each directory
    resolved once (``resolved`` keeps them), the file itself looked at once; pathlib's
    parsing and comparisons were most of planning a million files."""
    root = os.path.abspath(dest)
    target = os.path.join(root, *_relative_parts(row, layout))
    real_root = _resolved_dir(root, resolved)
    if os.path.islink(target):
        real_target = os.path.realpath(target)
    else:
        parent, name = os.path.split(target)
        real_target = os.path.join(_resolved_dir(parent, resolved), name)
    if real_target != real_root and not real_target.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafePathError(
            f"product {_product_name(row)}: {target} resolves to {real_target}, outside the "
            f"destination {real_root} (a symlink leads out of it)"
        )
    return Path(target)


def _resolved_dir(directory: str, cache: dict[str, str]) -> str:
    real = cache.get(directory)
    if real is None:
        real = cache[directory] = os.path.realpath(directory)
    return real


def check_collisions(paths: Mapping[str, Path] | Iterable[tuple[str, Path]]) -> None:
    """Refuse two different products that map to one file.

    Parameters
    ----------
    paths : mapping or iterable of (key, path)
        Product key (dataURI) to destination path. The same key listed twice with the same path
        is not a collision.

    Raises
    ------
    UnsafePathError
        Listing every colliding path and the products that share it.
    """
    items = paths.items() if isinstance(paths, Mapping) else paths
    owners: dict[str, set[str]] = {}
    for key, path in items:
        # normpath, not pathlib: as exact for absolute paths and much cheaper on 10^4 products
        owners.setdefault(os.path.normpath(os.fspath(path)), set()).add(key)
    clashes = {path: keys for path, keys in owners.items() if len(keys) > 1}
    if clashes:
        lines = [f"{path}: {', '.join(sorted(keys))}" for path, keys in sorted(clashes.items())]
        raise UnsafePathError(
            f"{len(clashes)} destination path(s) would be written by several products:\n  "
            + "\n  ".join(lines),
            hint="deduplicate the products, or choose a layout that keeps them apart "
            "(e.g. 'astroquery', which includes obs_id)",
        )


def _existing(path: Path | str) -> Path:
    """``path`` itself or its nearest existing ancestor (what a filesystem can be asked about)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def describe_filesystem(path: Path | str) -> str:
    """The filesystem holding ``path``, for messages: ``"/mnt/data (tmpfs)"``."""
    probe = _existing(path)
    mount = probe
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    kind = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[1].replace("\\040", " ") == os.fspath(mount):
                    kind = fields[2]  # the last match is the mount on top
    except OSError:  # not Linux
        pass
    return f"{mount} ({kind})" if kind else os.fspath(mount)


def free_bytes(path: Path | str) -> int:
    """Free bytes, for this user, on the filesystem holding ``path``."""
    return shutil.disk_usage(_existing(path)).free


def check_free_space(dest: Path | str, bytes_needed: int, *, margin: int = 64 * 2**20) -> int:
    """Refuse to start when the destination's filesystem cannot hold what is still to fetch.

    Parameters
    ----------
    dest : path-like
        The destination; the nearest existing ancestor is measured.
    bytes_needed : int
        Bytes still to download.
    margin : int
        Bytes to keep free beyond ``bytes_needed`` (default 64 MiB), so the run does not leave
        the filesystem (and everything else using it) completely full.

    Returns
    -------
    int
        Free bytes on that filesystem.

    Raises
    ------
    TransferError
        When ``free < bytes_needed + margin``; the message states the margin.
    """
    from mastpipe.stages.retrieve.progress import format_bytes  # progress imports the engine, which imports this

    probe = _existing(dest)
    free = shutil.disk_usage(probe).free
    if free < bytes_needed + margin:
        raise TransferError(
            f"not enough free space on {describe_filesystem(probe)} for {probe}: the files still "
            f"to fetch need {format_bytes(bytes_needed)} + {format_bytes(margin)} margin; "
            f"{format_bytes(free)} free",
            hint="free some space or choose another destination (the margin keeps the "
                 "filesystem from filling up completely)",
        )
    return free


def output_dirs(settings: Retrieve, base: Path) -> list[tuple[str, Path]]:
    """The directories retrieve writes to in the recipe's mode, each with the recipe field
    that names it: the destination (download), the curl script's, the manifest's. ``base`` is
    the recipe's directory, against which relative paths are resolved."""
    destination = (base / settings.destination).resolve()
    manifest = (base / settings.manifest) if settings.manifest else destination / "manifest.ecsv"
    dirs = [("retrieve.destination", destination)] if settings.mode == "download" else []
    if settings.mode == "curl":
        script = (base / settings.script) if settings.script else destination / "mastpipe-download.sh"
        dirs.append(("retrieve.script" if settings.script else "retrieve.destination", script.resolve().parent))
    dirs.append(("retrieve.manifest" if settings.manifest else "retrieve.destination", manifest.resolve().parent))
    return dirs


def check_outputs(settings: Retrieve, recipe_path: Path) -> None:
    """Fail now, before MAST is asked anything, when retrieve could not write its outputs.

    Otherwise every download would fail one by one and the manifest could not be written.

    Raises
    ------
    NotWritableError
        A directory of :func:`output_dirs` cannot be created or written.
    """
    from mastpipe.state import writable_problem

    for field_name, directory in output_dirs(settings, recipe_path.resolve().parent):
        problem = writable_problem(directory)
        if problem is not None:
            raise NotWritableError(
                f"cannot write to {directory}: {problem}",
                hint=f"{field_name} in {recipe_path} leads there (relative paths are relative to the "
                     "recipe's directory); choose a directory you can write to, or fix its permissions")
