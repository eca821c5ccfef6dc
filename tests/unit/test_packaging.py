"""The README's commands, compose.yaml and the packaging do what they say."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from service.settings import backend_for
from tests.unit.test_layers import LAYERS

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "\n    scripts/serve\n" in README
    assert "\n    scripts/test\n" in README
    assert (ROOT / "scripts/serve").stat().st_mode & 0o111
    assert re.search(r"^scripts/test$", (ROOT / ".ci/run").read_text(), re.M)


def test_distribution_installs_the_layers_as_packages_whose_import_path_is_their_folder() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    layers = {p for p in packages if "." not in p}
    assert layers == set(LAYERS)
    # Sub-packages (api.console, projections.read_model) live inside their layer.
    assert all(p.split(".")[0] in layers for p in packages)
    folders = {
        str(d.parent.relative_to(ROOT)).replace("/", ".") for d in ROOT.glob("*/*/__init__.py")
    }
    assert {f for f in folders if f.split(".")[0] in layers} <= set(packages)
    assert "package-dir" not in config["tool"]["setuptools"]  # no import hook: path == folder
    for package in packages:
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file()
    assert config["project"]["scripts"]["callback-ledger"] == "callback_ledger.cli:main"


def compose_ledger() -> dict:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert {"postgres", "ledger", "projector"} <= set(compose["services"])
    projector = compose["services"]["projector"]
    assert "exec callback-ledger project" in projector["command"][-1]
    assert (
        projector["environment"]["LEDGER_DATABASE_URL"]
        == compose["services"]["ledger"]["environment"]["LEDGER_DATABASE_URL"]
    )
    return compose["services"]["ledger"]


def test_compose_configures_the_service_against_its_postgres() -> None:
    ledger = compose_ledger()
    url = ledger["environment"]["LEDGER_DATABASE_URL"]
    env = backend_for(url).eventsourcing_env
    assert env["POSTGRES_HOST"] == "postgres"
    assert env["POSTGRES_DBNAME"] == "ledger"
    assert "postgres" in ledger["depends_on"]
    assert "SINCH_WEBHOOK_SECRET" in ledger["environment"]
    assert "callback-ledger serve --host 0.0.0.0 --port 8000" in ledger["command"][-1]
    # The secret is required (compose stops with the message when it is unset), and only the
    # public port (the webhook, the bare /healthz) is published; the private listener is not.
    assert ledger["environment"]["SINCH_WEBHOOK_SECRET"].startswith("${SINCH_WEBHOOK_SECRET:?")
    assert ledger["environment"]["LEDGER_PRIVATE_LISTEN"] == "0.0.0.0:8001"
    assert ledger["ports"] == ["8000:8000"]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readme_is_a_door_and_its_guides_links_all_lead_somewhere() -> None:
    assert len(README.splitlines()) <= 400
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 6
    for page in pages:
        text = page.read_text()
        assert not re.search(r"issue \d", text, re.I), page
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.name}: {target}"
