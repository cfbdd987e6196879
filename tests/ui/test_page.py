"""The web page in headless Chromium against `modelrepo serve` with an API key: it loads, lists,
pages, searches, approves and deploys (the change shows in the timeline), renders hostile strings as
text, keeps the key for the tab only, and axe-core finds nothing serious. Every test also checks (in
the `tab` fixture) that no request left the origin and that nothing broke the page's policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.local.conftest import Served, wait_for
from tests.ui.conftest import API_KEY, Tab, artifact, call, register

pytestmark = pytest.mark.xdist_group("browser")


def rows(tab: Tab, list_name: str) -> list[str]:
    return tab.page.locator(f'[data-list="{list_name}"] tbody tr td:first-child').all_inner_texts()


def test_the_page_lists_pages_and_searches_experiments(tab: Tab, served: Served) -> None:
    for n in range(15):
        call(served, "PATCH", f"/api/experiments/exp-{n:03d}", {"description": f"model {n}", "by": "alice"})
    wait_for(lambda: len(call(served, "GET", "/api/experiments?limit=100")["items"]) == 15, timeout=10)

    tab.open()
    expect(tab.page.locator("#key-dialog")).to_be_visible()  # the API said 401: the page asks
    tab.enter_key()
    page = tab.page
    expect(page.get_by_role("heading", level=1)).to_have_text("Experiments")
    expect(page.locator('[data-list="experiments"] tbody tr')).to_have_count(10)  # a page of 10
    assert rows(tab, "experiments") == [f"exp-{n:03d}" for n in range(10)]
    page.get_by_role("button", name="Next page of experiments").click()
    expect(page.locator('[data-list="experiments"] .page-number')).to_have_text("Page 2")
    assert rows(tab, "experiments") == [f"exp-{n:03d}" for n in range(10, 15)]
    expect(page.get_by_role("button", name="Next page of experiments")).to_be_disabled()
    page.get_by_role("button", name="Previous page of experiments").click()
    expect(page.locator('[data-list="experiments"] .page-number')).to_have_text("Page 1")

    page.get_by_label("Experiment id starts with").fill("exp-01")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator('[data-list="experiments"] tbody tr')).to_have_count(5)
    assert rows(tab, "experiments") == [f"exp-{n:03d}" for n in range(10, 15)]


def test_an_experiment_pages_its_versions_and_versions_are_found_by_tag(tab: Tab, served: Served) -> None:
    run_artifact_id = artifact(served, "churn", "run-1")
    for _ in range(15):
        register(served, "churn", run_artifact_id, metrics={"auc": 0.91})
    call(served, "PUT", "/api/experiments/churn/models/7/tags/stage", {"value": "live", "by": "alice"})
    wait_for(lambda: call(served, "GET", "/api/search/models?tag.stage=live")["items"], timeout=10)

    tab.open("#/experiments/churn")
    tab.enter_key()
    page = tab.page
    expect(page.get_by_role("heading", level=1)).to_have_text("churn")
    expect(page.locator('[data-list="versions"] tbody tr')).to_have_count(10)
    assert rows(tab, "versions") == [f"version {v}" for v in range(15, 5, -1)]
    page.get_by_role("button", name="Next page of versions").click()
    expect(page.locator('[data-list="versions"] .page-number')).to_have_text("Page 2")
    assert rows(tab, "versions") == [f"version {v}" for v in range(5, 0, -1)]

    page.get_by_label("Tag (key=value)").fill("stage=live")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator('[data-list="versions"] tbody tr')).to_have_count(1)
    assert rows(tab, "versions") == ["version 7"]

    page.get_by_role("link", name="Experiments").first.click()
    page.locator("form[aria-label='Versions of every experiment']").get_by_label("Tag (key=value)").fill("stage=live")
    page.get_by_role("button", name="Find versions").click()
    expect(page.locator('[data-list="matching versions"] tbody tr')).to_have_count(1)
    expect(page.locator('[data-list="matching versions"] tbody tr')).to_contain_text("version 7")


def test_approve_and_deploy_with_the_key_and_the_change_shows_in_the_timeline(tab: Tab, served: Served) -> None:
    run_artifact_id = artifact(served, "churn", "run-1")
    register(served, "churn", run_artifact_id)
    register(served, "churn", run_artifact_id, description="second try")
    call(served, "PUT", "/api/experiments/churn/targets/production", {"requireApproval": True, "by": "lead"})
    call(served, "POST", "/api/experiments/churn/models/1/approval", {"status": "approved", "by": "lead"})
    call(
        served, "POST", "/api/experiments/churn/deployments", {"version": 1, "target": "production", "deployedBy": "ci"}
    )

    tab.open("#/experiments/churn/versions/2")
    tab.enter_key()
    page = tab.page
    expect(page.get_by_role("heading", level=1)).to_have_text("churn version 2")
    expect(page.locator("#summary .badge")).to_have_text("pending")
    page.get_by_label("Your name").fill("dana")
    page.get_by_label("Comment").fill("beats version 1 on holdout")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#summary .badge")).to_have_text("approved")
    approval = call(served, "GET", "/api/experiments/churn/models/2")["approval"]
    assert (approval["status"], approval["by"], approval["comment"]) == (
        "approved",
        "dana",
        "beats version 1 on holdout",
    )

    page.get_by_label("Target").fill("production")
    page.get_by_role("button", name="Deploy…").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Deploy version 2 of churn to production, which runs version 1 now, as dana.")
    dialog.get_by_role("button", name="Deploy").click()
    expect(page.locator("#summary")).to_contain_text("@production")
    current = call(served, "GET", "/api/experiments/churn/deployments/production")["current"]
    assert (current["version"], current["deployedBy"]) == (2, "dana")

    page.get_by_role("link", name="churn").first.click()
    timeline = page.get_by_role("region", name="Deployments to production")
    expect(timeline.locator("li").first).to_contain_text("version 2 by dana (was version 1)")
    expect(timeline.locator("li").first.locator(".badge-current")).to_have_text("current")
    expect(timeline.locator("li").nth(1)).to_contain_text("version 1 by ci")


def test_roll_back_with_the_keyboard_and_a_confirmation(tab: Tab, served: Served) -> None:
    run_artifact_id = artifact(served, "churn", "run-1")
    for version in (1, 2):
        register(served, "churn", run_artifact_id)
        call(
            served,
            "POST",
            "/api/experiments/churn/deployments",
            {"version": version, "target": "staging", "deployedBy": "ci"},
        )

    tab.open("#/experiments/churn")
    tab.enter_key()
    page = tab.page
    button = page.get_by_role("button", name="Roll back staging…")
    button.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Your name")).to_be_focused()
    page.keyboard.type("erin")
    page.keyboard.press("Enter")  # submits the name
    expect(dialog).to_contain_text(
        "staging runs version 2 of churn; rolling back deploys the version it ran before, as erin."
    )
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe choice has the focus
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert call(served, "GET", "/api/experiments/churn/deployments/staging")["current"]["version"] == 2

    button.focus()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_role("button", name="Roll back")).to_be_focused()
    page.keyboard.press("Enter")
    timeline = page.get_by_role("region", name="Deployments to staging")
    expect(timeline.locator("li").first).to_contain_text("version 1 by erin (was version 2)")
    assert call(served, "GET", "/api/experiments/churn/deployments/staging")["current"]["version"] == 1


HOSTILE = {
    "description": '<img src=x onerror="window.__pwned=1">',
    "experiment": '"onerror="window.__pwned=2" x="',
    "tag": "<script>window.__pwned=3</script>",
    "comment": "</bdi><b onclick=window.__pwned=4>bold</b>",
    "actor": "<svg onload=window.__pwned=5>",
    "dataset": "javascript:window.__pwned=6",
}


def test_hostile_strings_render_as_text_and_no_script_runs(tab: Tab, served: Served) -> None:
    run_artifact_id = artifact(served, "churn", "run-1")
    register(
        served,
        "churn",
        run_artifact_id,
        registeredBy=HOSTILE["actor"],
        description=HOSTILE["description"],
        signature={"inputs": [{"name": "abc\u202edef"}]},
        lineage={"datasets": [HOSTILE["dataset"]]},
    )
    call(served, "PATCH", "/api/experiments/churn", {"description": HOSTILE["experiment"], "by": "alice"})
    call(served, "PUT", "/api/experiments/churn/models/1/tags/note", {"value": HOSTILE["tag"], "by": "alice"})
    call(
        served,
        "POST",
        "/api/experiments/churn/models/1/approval",
        {"status": "rejected", "by": "lead", "comment": HOSTILE["comment"]},
    )
    bidi_name = "model\u202egnp.exe"  # shows as "modelexe.png" if the control is obeyed
    served.drop(f"churn/run-2/{bidi_name}", b"x")
    wait_for(lambda: call(served, "GET", "/api/rejections")["items"], timeout=10)

    tab.open("#/experiments/churn/versions/1")
    tab.enter_key()
    page = tab.page
    main = page.locator("main")
    expect(page.get_by_role("heading", level=1)).to_have_text("churn version 1")
    expect(main.locator(".lead")).to_have_text(HOSTILE["description"])
    expect(main.locator("#summary")).to_contain_text(HOSTILE["comment"])
    expect(main.locator("#summary")).to_contain_text(f"note={HOSTILE['tag']}")
    expect(main.locator("#summary")).to_contain_text(f"by {HOSTILE['actor']}")
    expect(main.locator("section", has_text="Lineage").locator("code")).to_have_text(HOSTILE["dataset"])
    expect(main.locator("pre.json")).to_contain_text('"abc\\u202edef"')
    assert main.locator("a[href^='javascript']").count() == 0
    page.get_by_role("link", name="churn").first.click()
    expect(main.locator(".lead")).to_have_text(HOSTILE["experiment"])

    page.get_by_role("link", name="Rejections and dead letters").click()
    rejected = main.locator('[data-list="rejections"] tbody tr code')
    expect(rejected).to_have_text("churn/run-2/modelU+202Egnp.exe")
    expect(rejected.locator(".control")).to_have_attribute("title", "bidirectional control character U+202E")

    for view, heading in (
        ("#/experiments/churn/versions/1", "churn version 1"),
        ("#/experiments/churn", "churn"),
        ("#/problems", "Rejections and dead letters"),
    ):
        tab.open(view)
        expect(page.locator("main h1")).to_have_text(heading)  # the view is in place once it has loaded
        assert page.evaluate("window.__pwned") is None
        assert main.locator("img, script, svg, b, iframe, object").count() == 0
        assert "\u202e" not in main.inner_text()
        # Every user-controlled value is isolated: it cannot reorder the text around it.
        isolation = page.evaluate(
            "[...document.querySelectorAll('main bdi')].map((e) => getComputedStyle(e).unicodeBidi)"
        )
        assert isolation and set(isolation) == {"isolate"}


def test_the_key_is_asked_for_checked_and_kept_only_for_the_tab(tab: Tab, served: Served) -> None:
    tab.open()
    page = tab.page
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Key")).to_be_focused()
    tab.enter_key("not-the-key")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("The registry refused this key")
    tab.enter_key()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("heading", level=1)).to_have_text("Experiments")
    assert page.evaluate("sessionStorage.getItem('modelrepo.apiKey')") == API_KEY
    assert page.evaluate("localStorage.length") == 0
    assert tab.context.cookies() == []
    page.reload()  # the same tab keeps it
    expect(page.locator('[data-list="experiments"]')).to_be_visible()
    expect(dialog).to_be_hidden()

    other = tab.context.new_page()  # a new tab does not share sessionStorage
    other.goto(served.url + "/")
    expect(other.locator("#key-dialog")).to_be_visible()
    other.close()


def test_axe_finds_no_serious_or_critical_violation_on_any_view(tab: Tab, served: Served) -> None:
    run_artifact_id = artifact(served, "churn", "run-1")
    register(served, "churn", run_artifact_id, metrics={"auc": 0.91}, params={"lr": "0.01"}, description="first")
    register(served, "churn", run_artifact_id, signature={"inputs": []}, lineage={"sourceCommit": "4f2a9c1"})
    call(
        served, "POST", "/api/experiments/churn/deployments", {"version": 1, "target": "production", "deployedBy": "ci"}
    )
    call(
        served, "POST", "/api/experiments/churn/deployments", {"version": 2, "target": "production", "deployedBy": "ci"}
    )
    served.drop("churn/run-2/bad\\name.bin", b"x")
    wait_for(lambda: call(served, "GET", "/api/experiments")["items"], timeout=10)

    tab.open()
    page = tab.page
    expect(page.locator("#key-dialog")).to_be_visible()
    assert tab.axe() == [], "the key dialog"
    tab.enter_key()
    for view, heading in (
        ("#/", "Experiments"),
        ("#/experiments/churn", "churn"),
        ("#/experiments/churn/versions/2", "churn version 2"),
        ("#/problems", "Rejections and dead letters"),
        ("#/nowhere", "Not found"),
    ):
        page.evaluate(f"window.location.hash = {view!r}")
        expect(page.locator("main h1")).to_have_text(heading)
        expect(page.locator("main[aria-busy]")).to_have_count(0)
        assert tab.axe() == [], view
    page.evaluate("window.location.hash = '#/experiments/churn'")
    page.get_by_role("button", name="Roll back production…").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    assert tab.axe() == [], "the confirmation"


def test_download_with_the_key_gives_the_pinned_bytes(tab: Tab, served: Served) -> None:
    run_artifact_id = artifact(served, "churn", "run-1", data=b"the pinned weights")
    register(served, "churn", run_artifact_id)
    served.drop("churn/run-1/model.onnx", b"overwritten since")  # the version keeps its bytes

    tab.open("#/experiments/churn/versions/1")
    tab.enter_key()
    page = tab.page
    with page.expect_download() as started:
        page.get_by_role("button", name="Download").click()
    download = started.value
    assert download.suggested_filename == "model.onnx"
    assert Path(download.path()).read_bytes() == b"the pinned weights"
