"""Dagster's SQLite storage with small run shards: the instance storage `dagster.yaml` names.

Dagster's SQLite event log keeps every run in its own database file. With SQLite's default 4 kB
pages the empty schema of that file (10 tables and 15 indexes: event_logs, asset keys, check
executions, ...) is ~106 kB before a single event: more than the events of a poll run between
chart redraws. The same schema in 512-byte pages is ~18 kB, and the events pack more tightly into small
pages too (a poll run's shard measured 233 kB → 140 kB with the same rows). Everything else is
Dagster's own SqliteStorage: the same files in the same places (history/runs.db,
history/runs/<run_id>.db, history/runs/index.db, schedules/schedules.db), the same schema and
migrations; a shard made before this class (4 kB pages) is read and written as before.

A new run shard also gets only the tables Dagster uses in a run's own file (event_logs, and
asset_event_tags, which deleting a run touches), not the cross-run tables (asset keys, check
executions, concurrency slots, ...) that only the index shard fills: ~8 kB instead of ~18 kB a
run. Its alembic stamp is the same as a full shard's, so Dagster treats it as current.

It also stops two slow leaks that every process using this storage would otherwise have (see
`resolve_alembic_resources_once` and `load_alembic_scripts_once`), and caps glibc's malloc arenas
in those processes and the ones they start (`malloc_arenas`).
"""

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

import alembic.util
import sqlalchemy.exc as db_exc
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from dagster._core.storage.event_log.schema import AssetEventTagsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sql import (
    ALEMBIC_SCRIPTS_LOCATION,
    check_alembic_revision,
    get_alembic_config,
    stamp_alembic_rev,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from sqlalchemy.engine import Engine

from gh_pipeline.defs.ops.malloc_arenas import cap_malloc_arenas

# First thing on import: every arena a thread creates before the cap stays for the process's life.
cap_malloc_arenas()

_resolved_resources: dict[str, Path] = {}
_resolve_lock = threading.Lock()


def resolve_alembic_resources_once() -> None:
    """Make alembic resolve a "package:path" script location once per process, not per call.

    Dagster checks its SQLite schema revision with alembic's ScriptDirectory.from_config on every
    instance it builds (the code server builds one per sensor tick, every 5 s) and on every new
    run shard. Each call resolves "dagster:_core/storage/alembic" through
    alembic.util.coerce_resource_to_filename, which opens an ExitStack and registers it with
    atexit: kept until the process exits, ~5 kB of RSS a call (measured). That is the daemon's
    and the code server's steady RSS growth in the soak. The location resolves to the same
    directory every time (dagster is installed as files), so the first answer is kept."""
    original = alembic.util.coerce_resource_to_filename
    if getattr(original, "_gh_pipeline_once", False):
        return

    def coerce_once(fname_or_resource: str) -> Path:
        name = os.fspath(fname_or_resource)
        if os.path.isabs(name) or ":" not in name:
            return original(fname_or_resource)  # a plain path: nothing is kept open
        with _resolve_lock:
            if name not in _resolved_resources:
                _resolved_resources[name] = original(fname_or_resource)
            return _resolved_resources[name]

    coerce_once._gh_pipeline_once = True  # type: ignore[attr-defined]
    # alembic.script.base calls it as util.coerce_resource_to_filename: the module attribute.
    alembic.util.coerce_resource_to_filename = coerce_once


resolve_alembic_resources_once()

_script_directories: dict[tuple[str, ...], ScriptDirectory] = {}
_script_lock = threading.Lock()


def load_alembic_scripts_once() -> None:
    """Make alembic read Dagster's migration scripts once per process, not on every schema check.

    Dagster asks alembic for the head revision of its schema with a new ScriptDirectory on every
    check and stamp: twice for each new run shard (three times with the small shards below), and
    on every instance it builds. A new ScriptDirectory compiles all of Dagster's 89 migration
    scripts from source again (~177-265 compiles a shard, ~176 an instance) and drops them.
    Nothing of it is kept, yet the process's RSS climbs: memray (the soak's --native-window) found the one sizeable allocation the daemon
    made and kept over 35 minutes of polling was a 3.8 MB resize of the interpreter's table of
    interned strings, which each compile fills and each release empties again; 1,000 new shards
    and 300 instances grew a process by 25 MB with Dagster's storage and 5 MB with this one
    (benchmarks/instance_build.py), and the daemon's creep over a 300-poll soak went with it.

    The scripts are part of the installed dagster package and do not change while the process
    runs, so the first ScriptDirectory for Dagster's location is kept and its revision map is
    read once. Every other script location is built as before."""
    original = ScriptDirectory.from_config.__func__  # type: ignore[attr-defined]
    if getattr(original, "_gh_pipeline_once", False):
        return

    def from_config_once(cls: type[ScriptDirectory], config: AlembicConfig) -> ScriptDirectory:
        location = config.get_alembic_option("script_location")
        if location != ALEMBIC_SCRIPTS_LOCATION or config.get_prepend_sys_paths_list():
            return original(cls, config)
        # Everything from_config reads from the config, so a different option is a new entry.
        key = tuple(
            repr(part)
            for part in (
                cls,
                location,
                config.get_alembic_option("file_template"),
                config.get_alembic_option("truncate_slug_length"),
                config.get_alembic_boolean_option("sourceless"),
                config.get_alembic_option("output_encoding"),
                config.get_version_locations_list(),
                config.get_alembic_option("timezone"),
                config.get_hooks_list(),
                config.get_alembic_boolean_option("recursive_version_locations"),
                sorted(config.messaging_opts.items()),
            )
        )
        with _script_lock:
            if key not in _script_directories:
                script = original(cls, config)
                _ = script.revision_map.heads  # read the scripts now, under the lock, once
                _script_directories[key] = script
            return _script_directories[key]

    from_config_once._gh_pipeline_once = True  # type: ignore[attr-defined]
    # Dagster's check (dagster._core.storage.sql) and alembic's stamp command both call it as
    # ScriptDirectory.from_config: the class attribute.
    ScriptDirectory.from_config = classmethod(from_config_once)  # type: ignore[method-assign,assignment]


load_alembic_scripts_once()

# SQLite's smallest page size. A run shard is written once by its run and read by the UI's run
# page; events larger than a page (most are 0.4-5 kB) go on overflow pages, which costs 4 bytes a
# page, not a second copy.
SHARD_PAGE_SIZE = 512


class SmallShardSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose per-run shards are created with SHARD_PAGE_SIZE pages (the
    cross-run index shard, written by every run, keeps SQLite's default)."""

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        path = engine.url.database
        # An empty file too: a process killed right after creating it wrote no page yet.
        if not for_index_shard and path and (not os.path.exists(path) or not os.path.getsize(path)):
            # The page size is fixed when the first page is written; switching to WAL (as Dagster
            # does after creating the tables) writes the header, so both go before the tables.
            # If another process created the file meanwhile, both pragmas leave it as it is.
            with contextlib.closing(
                sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
            ) as c:
                c.execute(f"PRAGMA page_size={SHARD_PAGE_SIZE}")
                c.execute("PRAGMA journal_mode=WAL")
            _create_run_tables(engine)
        super()._initdb(engine, for_index_shard=for_index_shard)


# The tables a run's own shard needs: its events, and the tags table that deleting a run clears
# (SqlEventLogStorage.delete_events_for_run). Everything else Dagster's schema defines is read and
# written in the index shard only.
RUN_SHARD_TABLES = (SqlEventLogStorageTable, AssetEventTagsTable)


def _create_run_tables(engine: Engine) -> None:
    """Create a new run shard's tables and stamp it with the current alembic revision, so the
    parent's _initdb (which creates every table of an unstamped file) leaves it as it is. If
    another process is creating the same shard, the parent's _initdb sorts it out."""
    alembic_config = get_alembic_config(sqlite_event_log.__file__)
    try:
        with engine.begin() as connection:
            if all(check_alembic_revision(alembic_config, connection)):
                return
            for table in RUN_SHARD_TABLES:
                table.create(connection, checkfirst=True)
            stamp_alembic_rev(alembic_config, connection)
    except (db_exc.DatabaseError, sqlite3.DatabaseError):
        # A concurrent creation ("already exists", "database is locked", the stamp's unique
        # constraint): the parent retries on exactly these.
        return


class SmallShardSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite instance storage (runs, event logs, schedules) with small run shards.

    In dagster.yaml:

        storage:
          custom:
            module: gh_pipeline.defs.ops.instance_storage
            class: SmallShardSqliteStorage
            config:
              base_dir: data/dagster_home/storage
    """

    def __init__(self, base_dir: str, inst_data=None) -> None:
        super().__init__(base_dir, inst_data=inst_data)
        # The parent made a plain SqliteEventLogStorage on the same directory; nothing has been
        # written through it yet (it only ensured index.db exists, as this one does too).
        self._event_log_storage.dispose()
        self._event_log_storage = SmallShardSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "SmallShardSqliteStorage":
        return cls.from_local(inst_data=inst_data, **config_value)
