"""The deployment examples: Kubernetes manifests validated against the Kubernetes
schemas (kubernetes-validate, strict), and the compose file's fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.processes import PROJECT_ROOT

MANIFESTS = sorted((PROJECT_ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifests_are_valid_kubernetes(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_probes_keep_migrations_away_from_restarts() -> None:
    deployment = next(d for p in MANIFESTS for d in documents(p) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"secretRef": {"name": "platform-service-database"}} in container["envFrom"]
    job = next(d for p in MANIFESTS for d in documents(p) if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][0] == "migrate"


def test_kubernetes_migrates_as_the_owner_and_serves_as_the_application_role() -> None:
    secrets = {
        d["metadata"]["name"]: d["stringData"]
        for p in MANIFESTS
        for d in documents(p)
        if d["kind"] == "Secret"
    }
    assert "//platform_app:" in secrets["platform-service-database"]["DATABASE_URL"]
    assert "MIGRATION_DATABASE_URL" not in secrets["platform-service-database"]
    migration_url = secrets["platform-service-migrations"]["MIGRATION_DATABASE_URL"]
    assert "//platform_owner:" in migration_url
    for kind in ("Deployment", "Job"):
        workload = next(d for p in MANIFESTS for d in documents(p) if d["kind"] == kind)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert {"secretRef": {"name": "platform-service-migrations"}} in container["envFrom"]


def test_compose_runs_a_fleet_behind_pgbouncer() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    services = compose["services"]
    replicas = [name for name in services if name.startswith("replica-")]
    assert len(replicas) == 3
    for name in replicas:
        environment = services[name]["environment"]
        assert "pgbouncer" in environment["DATABASE_URL"]
        assert "@postgres:" in environment["MIGRATION_DATABASE_URL"]
        # Two roles: the owner migrates, the application role serves.
        assert "//platform_app:" in environment["DATABASE_URL"]
        assert "//platform_owner:" in environment["MIGRATION_DATABASE_URL"]
        assert environment["DATABASE_POOLER"] == "transaction"
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert "healthcheck" in services["postgres"]
    assert services["pgbouncer"]["environment"]["DB_USER"] == "platform_app"
    (roles_script,) = services["postgres"]["volumes"]
    roles = (PROJECT_ROOT / roles_script.split(":")[0]).read_text()
    assert "CREATE DATABASE platform OWNER platform_owner" in roles
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO platform_app" in roles


def test_validation_catches_a_misspelt_field() -> None:
    deployment = next(d for p in MANIFESTS for d in documents(p) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_the_examples_operator_tokens_cannot_be_deployed() -> None:
    """Placeholders are refused at startup; compose takes the token from the environment."""
    from settings import SettingsError, load_settings

    secret = next(d for p in MANIFESTS for d in documents(p) if d["kind"] == "Secret")
    with pytest.raises(SettingsError, match="OPERATOR_TOKEN: is a placeholder"):
        load_settings(operator_token=secret["stringData"]["OPERATOR_TOKEN"])
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    token = compose["services"]["replica-1"]["environment"]["OPERATOR_TOKEN"]
    assert token.startswith("${OPERATOR_TOKEN:?")


def test_the_examples_say_which_peers_may_set_x_forwarded_for() -> None:
    """uvicorn's default trusts loopback; the examples name their proxy, so a
    client can neither share the proxy's address nor rotate its own."""
    deployment = next(d for p in MANIFESTS for d in documents(p) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    variables = {item["name"]: item.get("value") for item in container["env"]}
    assert variables["FORWARDED_ALLOW_IPS"] not in (None, "*", "")
    policy = next(d for p in MANIFESTS for d in documents(p) if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    for name in ("replica-1", "replica-2", "replica-3"):
        assert compose["services"][name]["environment"]["FORWARDED_ALLOW_IPS"] == ""


def test_only_the_service_roles_may_connect_in_the_compose_demo() -> None:
    """Any role that can connect could NOTIFY the event channel."""
    lines = (PROJECT_ROOT / "deploy" / "compose" / "roles.sql").read_text().splitlines()
    roles = "\n".join(line for line in lines if not line.startswith("--"))
    statements = [" ".join(statement.split()) for statement in roles.split(";")]
    assert "REVOKE CONNECT ON DATABASE platform FROM PUBLIC" in statements
    assert "GRANT CONNECT ON DATABASE platform TO platform_app" in statements
