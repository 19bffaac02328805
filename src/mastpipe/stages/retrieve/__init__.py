"""The retrieve stage: from the filtered product table to verified files on disk.

Where a download is *decided* and where it is *done*, in the order one file meets them:

==========================  =================================================================
module                      its part
==========================  =================================================================
:mod:`.stage`               the stage's entry: modes (download, curl, manifest), token check,
                            the manifest; builds the tasks and hands them to an engine
:mod:`.paths`               where each product lands; refuses hostile names; free space
:mod:`.files`               the vocabulary: ``FileTask``, ``FileResult``, events
:mod:`.decide`              **pure** decisions: what to do with one file before any request
                            (``decide``) and whether a response may be appended (``judge``)
:mod:`.settings`            ``DownloadSettings``: how to download, one frozen value per run
:mod:`.engine`              **acts**: ``Transfer`` plans a run and runs many files (threads)
:mod:`.fetch`               **acts**: one file, start to finish (lock, GET, stream, verify,
                            rename, record)
:mod:`.client`              HTTP sessions; redirects by hand; the token only to its hosts
:mod:`.dask`                the same engine's work handed to a Dask cluster
:mod:`.temporaries`         ``.NAME.part`` files, their metadata and their locks
:mod:`.ledger`              what was downloaded (SQLite), so a rerun costs no request
:mod:`.curl`                ``mode: curl``: a shell script doing the downloads instead
:mod:`.progress`            progress lines for people and for CI logs
:mod:`.outlook`             what a run would do, judged without doing it (``plan``, ``status``)
==========================  =================================================================
"""

from __future__ import annotations

__all__: list[str] = []
