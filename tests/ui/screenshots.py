"""`make screenshots`: the README's picture of the page, taken in Debian's Chromium from a
`modelrepo serve` on a scratch root seeded through the API with a small, made-up model history.

    python -m tests.ui.screenshots docs/screenshot.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.local.conftest import Served, start_serve, stop_serve, wait_for
from tests.ui.conftest import CHROMIUM, FLAGS, artifact, call, register


def seed(served: Served) -> None:
    first = artifact(served, "churn", "run-041", b"weights of run 41")
    second = artifact(served, "churn", "run-057", b"weights of run 57")
    call(
        served,
        "PATCH",
        "/api/experiments/churn",
        {"description": "Predicts churn from 90 days of usage", "by": "alice"},
    )
    call(served, "PUT", "/api/experiments/churn/targets/production", {"requireApproval": True, "by": "lead"})
    for auc, run_artifact_id, who in ((0.861, first, "alice"), (0.874, first, "bob"), (0.893, second, "alice")):
        register(served, "churn", run_artifact_id, registeredBy=who, metrics={"auc": auc}, params={"lr": "0.01"})
    for version in (1, 2, 3):
        call(served, "POST", f"/api/experiments/churn/models/{version}/approval", {"status": "approved", "by": "lead"})
        call(
            served,
            "POST",
            "/api/experiments/churn/deployments",
            {"version": version, "target": "staging", "deployedBy": "ci"},
        )
    for version in (1, 2):
        call(
            served,
            "POST",
            "/api/experiments/churn/deployments",
            {"version": version, "target": "production", "deployedBy": "carol"},
        )
    register(served, "churn", second, registeredBy="bob", metrics={"auc": 0.902}, description="more data")
    call(served, "PUT", "/api/experiments/churn/models/2/tags/stage", {"value": "live", "by": "carol"})
    wait_for(lambda: call(served, "GET", "/api/experiments")["items"], timeout=10)


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        served = start_serve(Path(scratch) / "root")
        try:
            seed(served)
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
                page.goto(f"{served.url}/#/experiments/churn")
                expect(page.locator("main h1")).to_have_text("churn")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            stop_serve(served)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
