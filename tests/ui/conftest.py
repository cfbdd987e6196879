"""A real browser on the page: Debian's Chromium, driven by Playwright's Python package.

One browser per pytest worker (the browser tests share an xdist group, so one worker runs them
all); each test gets a fresh context (no storage, no cookies) on a `modelrepo serve` of its own with
an API key. Every tab records each request the browser makes, each policy violation and each
uncaught error; at the end of every test no request may have left the served origin and nothing
may have broken the policy or thrown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.local.conftest import Served, start_serve, stop_serve, wait_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MODELREPO_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags this machine's closed network refuses Chromium's own
# connections, many at a time; none of them is the page's.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "ui-test-key-0123456789"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
# Run before any script of the page (injected by the driver, so the page's policy is not weakened):
# remembers every policy violation the browser reports.
WATCH_POLICY = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium and chromium-driver")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    yield launched
    launched.close()


@dataclass
class Tab:
    """One page in a fresh browser context, with what it asked the network for."""

    page: Page
    context: BrowserContext
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.origin}/{route}")

    def enter_key(self, key: str = API_KEY) -> None:
        dialog = self.page.locator("#key-dialog")
        dialog.get_by_label("Key").fill(key)
        dialog.get_by_role("button", name="Use this key").click()

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__violations ?? []")
        return found

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now."""
        if self.page.evaluate("typeof window.axe") == "undefined":
            self.page.evaluate(AXE.read_text())  # through the driver, as the policy forbids inline script
        results = self.page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
                 .map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.html)}))"""
        )
        return [v for v in results if v["impact"] in ("serious", "critical")]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = start_serve(tmp_path / "root", api_key=API_KEY)
    yield running
    stop_serve(running)


@pytest.fixture
def tab(browser: Browser, served: Served) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.add_init_script(WATCH_POLICY)
    page = context.new_page()
    opened = Tab(page, context, served.url)
    context.on("request", lambda request: opened.requests.append(request.url))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    page.set_default_timeout(15_000)
    yield opened
    try:
        violations = opened.violations() if not page.is_closed() else []
    finally:
        context.close()
    leaving = [u for u in opened.requests if not (u.startswith(served.url + "/") or u.startswith("blob:" + served.url))]
    assert leaving == [], f"requests left the origin: {leaving}"
    assert violations == [], f"the page broke its own policy: {violations}"
    assert opened.errors == [], f"the page threw: {opened.errors}"


# --- seeding through the API ----------------------------------------------------------------------


def artifact(served: Served, experiment: str, run: str, data: bytes = b"weights") -> str:
    served.drop(f"{experiment}/{run}/model.onnx", data)
    [found] = wait_for(lambda: served.request("GET", f"/api/runs/{run}/artifacts").json()["items"], timeout=10)
    run_artifact_id: str = found["runArtifactId"]
    return run_artifact_id


def register(served: Served, experiment: str, run_artifact_id: str, **fields: Any) -> dict[str, Any]:
    body = {"experimentId": experiment, "runArtifactId": run_artifact_id, "registeredBy": "alice", **fields}
    answer = served.request("POST", "/api/register", body)
    assert answer.status == 201, answer.body
    model: dict[str, Any] = answer.json()
    return model


def call(served: Served, method: str, path: str, body: Any = None) -> Any:
    answer = served.request(method, path, body)
    assert answer.status < 300, (method, path, answer.status, answer.body)
    return json.loads(answer.body) if answer.body else None
