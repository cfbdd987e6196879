"""The web page's routes in the core: what every host answers for `/`, `/api/ui/` and its files, the
headers that hold the browser to the page's rules, and the dead-letters listing the page shows."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from modelrepo import tables, ui
from modelrepo.adapters.folder import FolderDeadLetterQueue
from modelrepo.api import ROUTES, Api, is_public
from modelrepo.dispatch import DeliveryFailed, Dispatcher
from modelrepo.events import ObjectCreated
from modelrepo.outbox import CloudEvent
from modelrepo.service import ModelRepository
from tests.unit.conftest import record
from tests.unit.test_api import assert_problem, call

UI_FOLDER = Path(ui.__file__).parent
SERVED = sorted(p.name for p in UI_FOLDER.iterdir() if ui.ASSET_PATTERN.fullmatch(p.name))
STRICT = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@pytest.fixture
def api(repo: ModelRepository) -> Api:
    return Api(repo)


class Markup(HTMLParser):
    """Every tag with its attributes, and any text inside <script> or <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._inside = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside and data.strip():
            self.inline.append(data)


def parse(body: bytes) -> Markup:
    markup = Markup()
    markup.feed(body.decode("utf-8"))
    return markup


@pytest.mark.parametrize("path", ["/", "/api/ui/"])
def test_the_page_is_served_at_each_address_with_links_that_resolve_to_its_files(api: Api, path: str) -> None:
    answer = call(api, "GET", path)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    links = [a.get("src") or a.get("href") for tag, a in parse(answer.body).tags if tag in ("script", "link", "img")]
    assert links and all(links)
    for relative in links:
        assert relative is not None
        # Behind a prefix (API Gateway's stage, say) the same relative link lands on the same file.
        for prefix in ("", "/Prod"):
            target = urlsplit(urljoin(f"https://host{prefix}{path}", relative)).path.removeprefix(prefix)
            assert target.startswith("/api/ui/"), (path, relative)
            assert call(api, "GET", target).status == 200, target


def test_the_page_carries_a_strict_policy_and_nothing_inline_or_from_elsewhere(api: Api) -> None:
    answer = call(api, "GET", "/")
    assert answer.headers["Content-Security-Policy"] == STRICT
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["X-Frame-Options"] == "DENY"
    markup = parse(answer.body)
    assert markup.inline == [], "inline script or style would be refused by the policy"
    for tag, attributes in markup.tags:
        assert "style" not in attributes, tag
        assert not [name for name in attributes if name.startswith("on")], tag
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            assert not re.match(r"^([a-z][a-z0-9+.-]*:|//)", value), f"{tag} {name}={value} leaves the origin"
    assert [a.get("type") for tag, a in markup.tags if tag == "script"] == ["module"]


def test_the_scripts_build_no_markup_from_strings_and_name_no_other_origin() -> None:
    scripts = [name for name in SERVED if name.endswith(".js")]
    assert {"app.js", "api.js", "dom.js"} <= set(scripts)
    for name in scripts:
        source = (UI_FOLDER / name).read_text()
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert forbidden not in source, f"{name} uses {forbidden}"
        assert not re.search(r"https?://", source), f"{name} names another origin"
        assert not re.search(r"\.style\s*=|setAttribute\(\s*[\"']style", source), f"{name} sets inline style"


@pytest.mark.parametrize("name", SERVED)
def test_every_file_is_served_with_its_type_and_revalidates_by_etag(api: Api, name: str) -> None:
    answer = call(api, "GET", f"/api/ui/{name}")
    assert answer.status == 200
    assert answer.body == (UI_FOLDER / name).read_bytes()
    media = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}[name.rsplit(".", 1)[1]]
    assert answer.headers["Content-Type"].split(";")[0] == media
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "no-cache"
    again = call(api, "GET", f"/api/ui/{name}", headers={"if-none-match": answer.headers["ETag"]})
    assert (again.status, again.body) == (304, b"")
    stale = call(api, "GET", f"/api/ui/{name}", headers={"if-none-match": '"an-older-release"'})
    assert stale.status == 200 and stale.body == answer.body


@pytest.mark.parametrize(
    "asset",
    ["..%2F__init__.py", "__init__.py", "index.html", "LICENSES.md", "App.js", "app.js.map", "%2e%2e", "nothing.js"],
)
def test_a_name_that_is_not_a_file_of_the_page_is_404(api: Api, asset: str) -> None:
    assert_problem(call(api, "GET", f"/api/ui/{asset}"), 404, "no file")


def test_only_health_the_document_and_the_page_are_public() -> None:
    public = sorted(route.template for route in ROUTES if route.public)
    assert public == sorted(["/api/health", "/api/openapi.json", "/", "/api/ui/", "/api/ui/{asset}"])
    assert is_public("/") and is_public("/api/ui/app.js") and is_public("/api/health")
    for private in ("/api/experiments", "/api/dead-letters", "/api/ui/x/y", "/api/uix", "/api/ui", "/x", "//"):
        assert not is_public(private), private


def test_every_packaged_pattern_covers_the_page_files() -> None:
    """The Azure app installs the core as a wheel: a file not in package-data would be missing there."""
    project = tomllib.loads((UI_FOLDER.parents[1] / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["modelrepo"]
    for path in UI_FOLDER.iterdir():
        if path.suffix != ".py" and path.name != "__pycache__":
            relative = f"ui/{path.name}"
            assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


# --- dead letters ---------------------------------------------------------------------------------


class Refusing:
    subscriber = "refusing-hook"

    def publish(self, events: Sequence[CloudEvent]) -> None:
        raise DeliveryFailed("the receiver answered 503")


def parked_delivery(repo: ModelRepository) -> None:
    record(repo, "exp1/run1/model.bin", b"weights")
    Dispatcher(repo.metadata, Refusing()).drain(tables.run_partition("run1"))


def test_dead_letters_lists_parked_uploads_then_parked_deliveries(repo: ModelRepository, tmp_path: Path) -> None:
    letters = FolderDeadLetterQueue(tmp_path / "dead-letters")
    letters.park(ObjectCreated("exp1/run9/<img src=x>.bin", "etag-1", 3, datetime(2026, 1, 1, tzinfo=UTC)), "boom")
    parked_delivery(repo)
    api = Api(repo, dead_letters=letters)
    items = call(api, "GET", "/api/dead-letters").json()["items"]
    assert [(i["source"], i["keys"]) for i in items] == [
        ("local", ["exp1/run9/<img src=x>.bin"]),
        ("delivery", [f"{tables.run_partition('run1')} from event 1"]),
    ]
    assert items[0]["detail"] == "boom" and items[0]["failedAt"]
    assert "503" in items[1]["detail"] and items[1]["handle"].startswith(Refusing.subscriber)
    assert [i["source"] for i in call(api, "GET", "/api/dead-letters", query={"limit": "1"}).json()["items"]] == [
        "local"
    ]
    assert_problem(call(api, "GET", "/api/dead-letters", query={"limit": "0"}), 400, "limit")


def test_without_a_dead_letter_queue_the_route_lists_parked_deliveries(repo: ModelRepository) -> None:
    api = Api(repo)
    assert call(api, "GET", "/api/dead-letters").json() == {"items": []}
    parked_delivery(repo)
    assert [i["source"] for i in call(api, "GET", "/api/dead-letters").json()["items"]] == ["delivery"]
