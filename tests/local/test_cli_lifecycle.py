"""The lifecycle from the command line on a local root: experiments, approval and the gate, metadata,
search, archive, delete, @target wherever a version is taken, and the events."""

from __future__ import annotations

import json
from pathlib import Path

from tests.local.test_cli import Cli, cli, model_file  # noqa: F401 - fixtures


def test_the_lifecycle_tour(cli: Cli, model_file: Path, tmp_path: Path) -> None:  # noqa: F811
    uploaded = cli.json("upload", "churn", "run1", str(model_file))
    signature = tmp_path / "signature.json"
    signature.write_text(json.dumps({"inputs": [{"name": "x", "type": "double"}]}))
    first = cli.json(
        "register",
        "churn",
        uploaded["runArtifactId"],
        "--by",
        "alice",
        "--metric",
        "auc=0.91",
        "--param",
        "lr=0.01",
        "--signature",
        str(signature),
        "--source-commit",
        "abc1234",
        "--dataset",
        "s3://data/train.parquet",
    )
    assert (first["metrics"], first["params"], first["lineage"]["sourceCommit"]) == (
        {"auc": 0.91},
        {"lr": "0.01"},
        "abc1234",
    )
    assert first["approval"]["status"] == "pending"
    cli.json("register", "churn", uploaded["runArtifactId"], "--by", "alice")
    cli.json("register", "churn", uploaded["runArtifactId"], "--by", "alice")

    [listed] = cli.json("experiments")
    assert (listed["experimentId"], listed["latestVersion"], listed["versionCount"]) == ("churn", 3, 3)
    assert cli.json("describe", "churn", "--set", "predicts churn", "--by", "bob")["description"] == "predicts churn"
    assert cli.json("describe", "churn")["description"] == "predicts churn"

    cli.json("target", "churn", "production", "--require-approval", "--by", "lead")
    code, _, err = cli("deploy", "churn", "2", "production", "--by", "carol")
    assert code == 1 and "requireApproval" in err and "pending" in err
    assert cli.json("approve", "churn", "2", "--by", "lead", "--comment", "ok")["approval"]["status"] == "approved"
    assert cli.json("deploy", "churn", "2", "production", "--by", "carol")["version"] == 2
    assert cli.json("show", "churn", "@production")["version"] == 2
    assert cli.json("tag", "churn", "@production", "stage", "live", "--by", "bob")["tags"] == {"stage": "live"}
    assert cli.json("deploy", "churn", "@production", "staging", "--by", "carol")["version"] == 2
    assert cli.json("reject", "churn", "3", "--by", "lead")["approval"]["status"] == "rejected"

    assert [m["version"] for m in cli.json("search", "--tag", "stage=live")] == [2]
    assert [m["version"] for m in cli.json("search", "--status", "rejected")] == [3]
    assert [m["version"] for m in cli.json("versions", "churn", "--status", "approved")] == [2]

    assert cli.json("update", "churn", "3", "--by", "bob", "--description", "worse")["description"] == "worse"
    code, _, err = cli("update", "churn", "1", "--by", "bob", "--metric", "auc=0.5")
    assert code == 1 and "write-once" in err
    cli.json("archive", "churn", "3", "--by", "bob")
    assert [m["version"] for m in cli.json("versions", "churn")] == [2, 1]
    assert [m["version"] for m in cli.json("versions", "churn", "--archived")] == [3, 2, 1]
    cli.json("restore", "churn", "3", "--by", "bob")
    deleted = cli.json("delete", "churn", "1", "--by", "bob", "--reason", "bad data")
    assert deleted["deleted"]["reason"] == "bad data"
    code, _, err = cli("download", "churn", "1", str(tmp_path))
    assert code == 1 and "HTTP 410" in err
    code, _, err = cli("delete", "churn", "@production", "--by", "bob")
    assert code == 1 and "HTTP 409" in err

    events = cli.json("events", "churn")
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "io.modelrepo.version.deleted"
    assert [e["sequence"] for e in cli.json("events", "churn", "--after", str(len(events) - 2))] == [
        len(events) - 1,
        len(events),
    ]
    assert [e["type"] for e in cli.json("events", "--run", "run1")] == ["io.modelrepo.artifact.recorded"]


def test_bad_lifecycle_arguments_get_one_line(cli: Cli) -> None:  # noqa: F811
    for arguments in (
        ("versions", "churn", "--tag", "no-equals-sign"),
        ("register", "churn", "run1~" + "a" * 26, "--by", "x", "--metric", "auc=high"),
        ("show", "churn", "²"),
        ("describe", "churn", "--set", "text"),
    ):
        code, out, err = cli(*arguments)
        assert code != 0 and out == "" and err.count("\n") == 1, (arguments, err)
