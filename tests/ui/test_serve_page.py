"""`modelrepo serve` with an API key: the page's files need none (they hold no data), every call the
page makes does; the dead letters the watcher parked are listed by the route the page reads."""

from __future__ import annotations

from datetime import UTC, datetime

from modelrepo.adapters.folder import FolderDeadLetterQueue
from modelrepo.events import ObjectCreated
from modelrepo.settings import LocalSettings
from tests.local.conftest import Served


def test_the_page_needs_no_key_and_the_data_it_shows_does(served: Served) -> None:
    page = served.request("GET", "/", authorized=False)
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self';")
    for asset in ("app.js", "api.js", "dom.js", "style.css", "icon.svg"):
        assert served.request("GET", f"/api/ui/{asset}", authorized=False).status == 200, asset
    for data in ("/api/experiments", "/api/dead-letters", "/api/rejections", "/api/ui/..%2Fexperiments/x"):
        answer = served.request("GET", data, authorized=False)
        assert answer.status in (401, 404), data
        assert b"items" not in answer.body, data
    assert served.request("GET", "/api/ui/..%2Fexperiments", authorized=False).status == 404
    assert served.request("GET", "/api/experiments").status == 200


def test_dead_letters_of_the_drop_folder_are_listed(served: Served) -> None:
    folder = LocalSettings(root=served.root).dead_letters
    FolderDeadLetterQueue(folder).park(
        ObjectCreated("churn/run-1/model.onnx", "etag-1", 7, datetime(2026, 1, 1, tzinfo=UTC)), "OSError: disk full"
    )
    [letter] = served.request("GET", "/api/dead-letters").json()["items"]
    assert (letter["source"], letter["keys"], letter["detail"]) == (
        "local",
        ["churn/run-1/model.onnx"],
        "OSError: disk full",
    )
    assert served.request("GET", "/api/dead-letters", authorized=False).status == 401
