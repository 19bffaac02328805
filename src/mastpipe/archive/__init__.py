"""The one package that speaks MAST's wire format, and the only one that imports astroquery.

The stages call :class:`Archive` (:mod:`.service`): every request goes through its one retry
loop, polite (at most ``max_in_flight`` at once) and retried (timeouts, connection errors, 429,
5xx, honouring ``Retry-After``). What each request says and how each answer reads lives beside
it, one module per part of MAST's API:

- :mod:`.sessions`: astroquery imported with the configured server, its query objects pointed
  there, ``requests`` sessions with a timeout (astroquery sends none) and, only under
  ``--insecure``, no certificate check; which failures are worth another try.
- :mod:`.caom`: CAOM searches on the Portal API (criteria, positions, column values, time
  ranges, MAST's own name look-up).
- :mod:`.pages`: a product list asked page by page as astroquery asks it, each page read by
  :mod:`.scan` (array arithmetic, for the plain form MAST's product lists take) or :mod:`.rows`
  (row by row; names what is wrong with a malformed row, see :data:`MALFORMED`).
- :mod:`.missions`: the mission search API (``/search/<mission>/api/v0.1/...``), spoken with
  ``requests`` directly because astroquery's ``MastMissions`` drops ``totalResults``; its
  answers translated into the pipeline's vocabulary (:func:`mission_products_table`).
- :mod:`.cloud`: MAST's cloud copies (protocol map: ``mast-cloud.md``): which missions the
  public bucket mirrors (:func:`cloud_mission`), ``path_lookup`` in batches of at most
  :data:`PATH_LOOKUP_BATCH` URIs, and astroquery's rules from a path to a bucket key
  (:func:`bucket_key`).
"""

from mastpipe.archive.cloud import BUCKET, BUCKET_REGION, CLOUD_PREFIXES, PATH_LOOKUP_BATCH, bucket_key, cloud_mission
from mastpipe.archive.missions import SHARED_PRODUCT_COLUMNS, mission_download_url, mission_products_table
from mastpipe.archive.rows import MALFORMED, REQUIRED, PageColumns, product_table
from mastpipe.archive.scan import scan_answer
from mastpipe.archive.service import Archive, TimedOut

__all__ = [
    "BUCKET", "BUCKET_REGION", "CLOUD_PREFIXES", "MALFORMED", "PATH_LOOKUP_BATCH", "REQUIRED", "SHARED_PRODUCT_COLUMNS",
    "Archive", "PageColumns", "TimedOut", "bucket_key", "cloud_mission", "mission_download_url",
    "mission_products_table", "product_table", "scan_answer",
]
