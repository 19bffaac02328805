"""Each table stage as a run calls it: the recipe and the stage's input table in, its table out.

The glue between :class:`mastpipe.runner.Pipeline`, which decides whether a stage runs, and the
stage modules (:mod:`~mastpipe.stages.query`, :mod:`~mastpipe.stages.products`,
:mod:`~mastpipe.stages.unique`, :mod:`~mastpipe.stages.filter`), which know nothing of recipes
as a whole or of the state directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    from astropy.table import Table

    from mastpipe.archive import Archive
    from mastpipe.recipe.models import Recipe
    from mastpipe.stages.query import NameCache

__all__ = ["Computed", "compute"]


class Computed(NamedTuple):
    """A table stage's result."""

    table: Table
    #: unique and filter: which rows of their input they keep (what their checkpoints store)
    rows: np.ndarray | None = None
    #: products: the batch files it wrote, whose tables stacked in this order are ``table``
    #: (what its checkpoint is)
    parts: list[Path] | None = None


def compute(stage: str, table: Table | None, recipe: Recipe, *, archive: Callable[[], Archive],
            names: Callable[[], NameCache], parts: Callable[[], Path],
            check_columns: Callable[[], None]) -> Computed:
    """One table stage's result (see :class:`Computed`).

    Parameters
    ----------
    stage : str
        ``query``, ``products``, ``unique`` or ``filter``.
    table : Table or None
        The previous stage's table (None for query).
    recipe : Recipe
    archive, names : callable
        The MAST client and the object-name cache, made only by the stages that ask MAST.
    parts : callable
        The directory where the products stage keeps its finished batches (made on demand).
    check_columns : callable
        Checks a mission search's column names before the query stage asks for them.
    """
    import numpy as np

    from mastpipe.stages import filter as filter_stage
    from mastpipe.stages import products, query, unique

    r = recipe
    if stage == "query":
        if r.mission is not None:
            check_columns()
        return Computed(query.run(r.query, archive(), names=names(), cap=r.mast.row_cap,
                                  in_flight=r.mast.max_in_flight))
    assert table is not None
    if stage == "products":
        from mastpipe.state import read_table, write_table

        store = products.BatchStore(parts(), write_table, read_table)
        in_flight = r.products.in_flight or r.mast.max_in_flight
        listed = products.run(table, archive(), r.products.batch_size, in_flight, store, mission=r.mission)
        return Computed(listed, parts=store.files(table, r.products.batch_size))
    if stage == "unique":
        if not len(table):
            return Computed(table, np.zeros(0, dtype=np.intp))
        result, _, rows = unique.unique_rows(table, r.unique.key)
        return Computed(result, rows)
    if stage == "filter":
        mask = filter_stage.keep_mask(table, r.filter)
        return Computed(table.copy(copy_data=False) if mask.all() else table[mask], np.flatnonzero(mask))
    raise AssertionError(stage)
