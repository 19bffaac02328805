"""The Python API: run a recipe from a notebook or another pipeline, as the CLI does.

>>> import mastpipe
>>> outcome = mastpipe.run("pipelines/jwst-1073-nircam-uncal.yaml")   # doctest: +SKIP
>>> outcome.exit_code, outcome.report["retrieve"]["fetched"]           # doctest: +SKIP
(0, {'files': 4, 'bytes': 339840})
>>> outcome.tables["filter"]["productFilename", "size"]                # doctest: +SKIP

Logging goes through the standard :mod:`logging` module (logger ``"mastpipe"``), so an
embedding application routes it as it likes; the only output of its own is download progress
(``progress=False`` turns it off).

The modules: :mod:`~mastpipe.api.running` (run, the report and history it writes),
:mod:`~mastpipe.api.plan_status` (plan and status as data), :mod:`~mastpipe.api.iterfiles`
(each file as it lands). Import from ``mastpipe.api`` (or ``mastpipe``), not from them.
"""

from __future__ import annotations

from mastpipe.api.iterfiles import ConsumerStopped, RetrievedFile, iter_files
from mastpipe.api.plan_status import PlanGroup, PlanReport, StatusReport, plan, plan_pipeline, status, status_pipeline
from mastpipe.api.running import RunOutcome, describe_os_error, run, run_pipeline

__all__ = ["ConsumerStopped", "PlanGroup", "PlanReport", "RetrievedFile", "RunOutcome", "StatusReport",
           "describe_os_error", "iter_files", "plan", "plan_pipeline", "run", "run_pipeline", "status",
           "status_pipeline"]
