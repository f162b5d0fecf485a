"""The warehouse: the DuckDB file every step writes, its schema and its table catalogue.

`gh_pipeline.warehouse.connection` opens it and owns the one transaction helper;
`schema` creates the tables, `catalogue` declares them, `raw` loads events exactly once and
`watermarks` records how far each derived table has read its sources.
"""

from gh_pipeline.warehouse.connection import (
    Rollback,
    connect,
    row_count,
    scalar,
    table_exists,
    transaction,
)
from gh_pipeline.warehouse.schema import ensure_schema

__all__ = [
    "Rollback",
    "connect",
    "ensure_schema",
    "row_count",
    "scalar",
    "table_exists",
    "transaction",
]
