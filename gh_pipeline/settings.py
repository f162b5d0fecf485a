"""Documented environment variables and the paths derived from them (no Dagster import)."""

import os
from pathlib import Path

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_DATA_DIR = "data"
USER_AGENT = "gh-pipeline/0.1 (+https://github.com/gh-pipeline)"

ENV_TOKEN = "GITHUB_TOKEN"
ENV_API_URL = "GITHUB_API_URL"
ENV_DATA_DIR = "GH_PIPELINE_DATA_DIR"

WAREHOUSE_FILE = "warehouse.duckdb"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: an explicit argument, else $GH_PIPELINE_DATA_DIR, else ./data."""
    raw = explicit if explicit is not None else os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    return Path(raw).expanduser()


def warehouse_path(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / WAREHOUSE_FILE


def landing_dir(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / "landing"


def state_dir(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / "state"


def snapshot_dir(directory: str | Path | None = None) -> Path:
    return data_dir(directory) / "snapshot"
