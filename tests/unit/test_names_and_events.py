"""Ids, the bucket layout and event ordering: pure rules, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelrepo import tables
from modelrepo.errors import InvalidInput
from modelrepo.events import happened_after
from modelrepo.model import ArtifactKey, check_experiment_id, check_target

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", ["a", "A1", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "x" * 128, "a.b_c-d"])
def test_valid_ids(value: str) -> None:
    assert check_experiment_id(value) == value


@pytest.mark.parametrize("value", ["", ".a", "-a", "_a", "a b", "a/b", "a~b", "x" * 129, "é", "a\n"])
def test_invalid_ids_name_the_problem(value: str) -> None:
    with pytest.raises(InvalidInput, match="experimentId"):
        check_experiment_id(value)


@pytest.mark.parametrize("value", ["production", "staging", "a", "canary-2", "a" * 32])
def test_valid_targets(value: str) -> None:
    assert check_target(value) == value


@pytest.mark.parametrize("value", ["Production", "2prod", "-x", "a" * 33, "prod_1", ""])
def test_invalid_targets(value: str) -> None:
    with pytest.raises(InvalidInput, match="target"):
        check_target(value)


@pytest.mark.parametrize(
    "key",
    [
        "exp/run/model.bin",
        "exp/run/sub/folder/model.onnx",
        "exp/run/with space+plus%2B#hash?q.bin",
        "exp/run/模型-ñ.pt",
        "exp/run/" + "n" * 1024,
        "exp/run/" + "é" * 512,  # 1,024 UTF-8 bytes
        "exp/run/.hidden",
        "exp/run/a..b",
    ],
)
def test_keys_that_fit_the_layout(key: str) -> None:
    parsed = ArtifactKey.parse(key)
    assert parsed.key == key
    assert (parsed.experiment_id, parsed.run_id) == ("exp", "run")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("exp/model.bin", "layout"),
        ("model.bin", "layout"),
        ("exp/run/", "empty"),
        ("exp/run/a//b", "empty path segment"),
        ("exp/run/../x", "'..'"),
        ("exp/run/a/../../x", "'..'"),
        ("exp/run/./x", "'.'"),
        ("exp/run/a\\b", "backslash"),
        ("exp/run/a\x00b", "control character U+0000"),
        ("exp/run/a\x1fb", "control character U+001F"),
        ("exp/run/a\x7fb", "control character U+007F"),
        ("exp/run/evil\u202egnp.exe", "bidirectional control character U+202E"),
        ("exp/run/a\u2066b", "bidirectional"),
        ("exp/run/" + "n" * 1025, "1025 UTF-8 bytes"),
        ("exp/run/" + "é" * 513, "1026 UTF-8 bytes"),
        ("exp/run/\udcffbad", "UTF-8"),
        ("bad id/run/x", "experimentId"),
        ("exp/../x", "runId"),
    ],
)
def test_keys_that_do_not_fit_are_refused_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=None) as refused:
        ArtifactKey.parse(key)
    assert reason in refused.value.detail


def test_run_artifact_ids_are_stable_url_safe_and_locatable() -> None:
    first = tables.run_artifact_id("exp", "run-1", "a/b c#?.bin", '"etag-1"')
    assert first == tables.run_artifact_id("exp", "run-1", "a/b c#?.bin", '"etag-1"')
    assert first != tables.run_artifact_id("exp", "run-1", "a/b c#?.bin", '"etag-2"')
    assert first != tables.run_artifact_id("exp2", "run-1", "a/b c#?.bin", '"etag-1"')
    assert all(c.isalnum() or c in "-._~" for c in first)
    partition, row = tables.locate_run_artifact(first)
    assert partition == "run~run-1" and row.startswith(tables.ARTIFACT_PREFIX)


@pytest.mark.parametrize(
    "bad", ["", "nope", "run~short", "bad id~abcdefghijklmnopqrstuvwxyz", "run~ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
)
def test_malformed_run_artifact_ids_are_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        tables.locate_run_artifact(bad)


def test_inverted_version_rows_sort_newest_first() -> None:
    rows = [tables.version_row(v) for v in (1, 2, 10, 11, 999)]
    assert sorted(rows) == list(reversed(rows))


def test_cursors_round_trip_and_refuse_foreign_listings() -> None:
    row = tables.version_row(7)
    assert tables.decode_cursor(tables.encode_cursor(row), tables.VERSION_PREFIX) == row
    with pytest.raises(InvalidInput, match="different listing"):
        tables.decode_cursor(tables.encode_cursor(row), tables.EVENT_PREFIX)
    with pytest.raises(InvalidInput, match="cursor is invalid"):
        tables.decode_cursor("!!!not-base64!!!", tables.VERSION_PREFIX)


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        ("0055AEBA5E", "0055AEBA5D", True),
        ("0055AEBA5D", "0055AEBA5E", False),
        ("0055AEBA5E", "0055AEBA5E", False),
        ("0055AEBA5E1", "0055AEBA5E", True),  # right-padded: ...E1 > ...E0
        ("0055AEBA5E", "0055AEBA5E0", False),  # equal after padding
        ("0055aeba5f", "0055AEBA5E", True),  # case does not matter
        ("0000000000000000000A", "0000000000000000000B", False),
    ],
)
def test_sequencers_compare_as_padded_hex(a: str, b: str, newer: bool) -> None:
    assert happened_after(a, T0, b, T0 + timedelta(days=1)) is newer


def test_without_sequencers_the_upload_time_decides() -> None:
    assert happened_after(None, T0 + timedelta(seconds=1), None, T0)
    assert not happened_after(None, T0, None, T0)
    assert not happened_after("01", T0, None, T0 + timedelta(seconds=1))
