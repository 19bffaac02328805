"""Helpers for tests of MAST's cloud copies against the sandbox's S3 bucket.

:class:`~mastpipe.sandbox.connect.ConnectProxy` (re-exported here) is how unmodified astroquery
reaches the sandbox for ``path_lookup``.
"""

from __future__ import annotations

from mastpipe.sandbox.connect import ConnectProxy

__all__ = ["ConnectProxy", "bucket_rows", "s3_client"]


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    """An anonymous boto3 client of ``endpoint`` with botocore's retries off (faults stay visible)."""
    import boto3
    import botocore
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1}))


def bucket_rows(sandbox, proposal: str = "1073") -> list[dict]:  # type: ignore[no-untyped-def]
    """The distinct product rows of a program's observations."""
    rows: dict[str, dict] = {}
    for obs in sandbox.catalog.observations():
        if obs["proposal_id"] == proposal:
            for row in sandbox.catalog.products(obs["obsid"]):
                rows.setdefault(row["dataURI"], row)
    return list(rows.values())
