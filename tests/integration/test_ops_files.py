"""The alert rules and the Grafana dashboard under ops/ name only metrics (and labels) the
service exports: a real app is scraped after traffic of every kind and compared."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_app
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.unit.test_ops_files import names_in

OPS = Path(__file__).parents[2] / "ops"
RULES = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "callback-ledger.json"

# PromQL's words that are not metric names.


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
        assert rule["labels"]["severity"] in ("critical", "warning", "ticket"), rule
        assert rule["annotations"]["summary"], rule
    return [rule["expr"] for rule in rules]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    found = []
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            found.append(target["expr"])
    return found


@pytest.fixture
def exported(settings: Settings, ledger: Ledger, admin_key: str) -> Iterator[dict[str, set[str]]]:
    """Every sample name of a scrape after traffic of every kind, with its label names."""
    app = create_app(dataclasses.replace(settings, metrics_refresh_s=0), ledger)
    bearer = {"Authorization": f"Bearer {admin_key}"}
    with TestClient(app, raise_server_exceptions=False, headers=bearer) as client:

        def post(raw: bytes, secret: str = SECRET) -> int:
            headers = p.signed_headers(raw, secret)
            return client.post("/webhooks/sinch", content=raw, headers=headers).status_code

        report = p.encode(p.delivery("M1"))
        assert [post(report), post(report), post(b"[]"), post(report, "wrong-secret")] == [
            200,
            200,
            400,
            401,
        ]
        assert client.get("/messages/M1").status_code in (200, 404)
        text = client.get("/metrics").text
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    yield found


@pytest.mark.parametrize("where", ["rules", "dashboard"])
def test_expressions_name_exported_metrics(exported: dict[str, set[str]], where: str) -> None:
    expressions = rule_expressions() if where == "rules" else dashboard_expressions()
    assert expressions
    for expression in expressions:
        metrics, labels = names_in(expression)
        assert metrics, expression
        unknown = metrics - exported.keys()
        assert not unknown, f"{where}: {expression!r} names {unknown}, not exported"
        known_labels = set().union(*(exported[name] for name in metrics))
        assert labels <= known_labels, f"{where}: {expression!r}: {labels - known_labels}"
