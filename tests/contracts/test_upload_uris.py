"""Every ArtifactStore names its uploads by a URI its users know, and reads that URI back to the key
(MLflow clients give a version's source as such a URI)."""

from __future__ import annotations

import io

from modelrepo.ports import ArtifactStore


def test_an_upload_uri_reads_back_to_its_key(artifact_store: ArtifactStore) -> None:
    for key in ("exp1/run1/model.bin", "exp1/run1/model/sub dir/naïve+name.txt"):
        artifact_store.put(key, io.BytesIO(b"x"))
        uri = artifact_store.uri_of(key)
        assert artifact_store.key_of_uri(uri) == key, uri
    folder = artifact_store.uri_of("exp1/run1/model/MLmodel").removesuffix("MLmodel")
    assert artifact_store.key_of_uri(folder) == "exp1/run1/model/"
    assert artifact_store.key_of_uri("ftp://elsewhere/exp1/run1/model.bin") is None
    assert artifact_store.key_of_uri("s3://some-other-bucket/exp1/run1/model.bin") is None
