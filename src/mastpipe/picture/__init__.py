"""A picture of what a recipe selects: one self-contained HTML page (``plan --html``, ``run --html``).

Astronomers judge a selection by looking at it, as MAST's Portal draws footprints on the sky. The
page shows the selected observations' footprints (``s_region``) on a sky map coloured by
instrument (or by query, when one instrument is all there is), when they were taken, files and
bytes by product type, and beside them the plan's table. Everything is inline (PNG images as
``data:`` URIs, CSS in the page, no script), so the page opens with no network, in a CI artifact
or an e-mail.

- :mod:`.page`: the page: which observations it shows, the tables, the HTML (:func:`plan_html`,
  :func:`run_html`, :func:`write_page`).
- :mod:`.figures`: the figures, drawn by matplotlib (:func:`footprints` reads ``s_region``).

matplotlib is an optional extra (``pip install 'mastpipe[html]'``): the astronomer's default
plotting library, imported only by :mod:`.figures` and only when a page is asked for (importing
this package does not import it).
"""

from mastpipe.picture.figures import footprints
from mastpipe.picture.page import _require_matplotlib as _require_matplotlib  # the CLI checks before it runs
from mastpipe.picture.page import plan_html, run_html, write_page

__all__ = ["footprints", "plan_html", "run_html", "write_page"]
