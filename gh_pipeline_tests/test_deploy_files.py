"""The deployment files under deploy/ agree with the instance the tests run (dagster.yaml) and hold
no credential: every connection setting of the PostgreSQL instance comes from the environment."""

import re
from pathlib import Path

import yaml

from gh_pipeline.settings import DEFAULT_MALLOC_ARENA_MAX, ENV_MALLOC_ARENA_MAX
from gh_pipeline_tests.support.dagster_process import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
PG_VARIABLES = {
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_postgres_instance_differs_from_dagster_yaml_only_in_storage() -> None:
    default = _yaml(REPO_ROOT / "dagster.yaml")
    postgres = _yaml(DEPLOY / "postgres" / "dagster.yaml")
    differing = sorted(
        k for k in default.keys() | postgres.keys() if default.get(k) != postgres.get(k)
    )
    assert differing == ["storage"], (
        f"deploy/postgres/dagster.yaml differs from dagster.yaml in {differing}: "
        "copy every change outside `storage` into both files"
    )
    assert default["storage"]["custom"]["class"] == "SmallShardSqliteStorage"
    assert "postgres" in postgres["storage"]


def test_postgres_connection_comes_only_from_the_environment() -> None:
    db = _yaml(DEPLOY / "postgres" / "dagster.yaml")["storage"]["postgres"]["postgres_db"]
    from_env = {key: value for key, value in db.items() if key != "scheme"}
    assert all(isinstance(v, dict) and set(v) == {"env"} for v in from_env.values()), from_env
    assert {v["env"] for v in from_env.values()} == PG_VARIABLES
    assert db["scheme"] == "postgresql+psycopg2"


def test_the_variables_are_documented() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    example = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    for name in sorted(PG_VARIABLES):
        assert f"`{name}`" in readme, f"{name} missing from the README's configuration table"
        assert re.search(rf"^# ?{name}=", example, re.MULTILINE), f"{name} not in .env.example"


def test_compose_and_helm_files_hold_no_password() -> None:
    compose = _yaml(DEPLOY / "docker-compose.yaml")
    assert set(compose["services"]) == {"postgres", "code-server", "daemon", "webserver"}
    for service in compose["services"].values():
        env = service.get("environment", {})
        for key, value in env.items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{key} must come from the environment"
    # Only the code server (and the runs it launches) may write the data volume.
    writers = [
        name
        for name, service in compose["services"].items()
        for volume in service.get("volumes", [])
        if volume.startswith("ghdata:") and not volume.endswith(":ro")
    ]
    assert "webserver" not in writers and "code-server" in writers
    helm = _yaml(DEPLOY / "helm" / "values.yaml")
    assert "postgresqlPassword" not in helm["postgresql"]
    assert helm["generatePostgresqlPasswordSecret"] is False
    assert helm["dagster-user-deployments"]["deployments"][0]["replicaCount"] == 1


def test_the_image_caps_malloc_arenas_as_dagster_dev_does() -> None:
    # The image's Postgres storage never imports the module that sets the cap for dagster dev.
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(
        rf"^\s+{ENV_MALLOC_ARENA_MAX}={DEFAULT_MALLOC_ARENA_MAX} \\$", dockerfile, re.MULTILINE
    )
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"| `{ENV_MALLOC_ARENA_MAX}` | `{DEFAULT_MALLOC_ARENA_MAX}` |" in readme
