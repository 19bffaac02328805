"""The pipeline's stages, in order: query -> products -> unique -> filter -> retrieve.

Each stage module has a pure function from table to table (tested without any server) and a thin
step that does the I/O around it; :mod:`mastpipe.runner` orders them and checkpoints each result.
"""

STAGES = ("query", "products", "unique", "filter", "retrieve")

__all__ = ["STAGES"]
