"""BuildKit's cache formats: written as BuildKit's encoder writes them, and read back."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import jsonschema
import pytest

from llbkit.core.cache.remote import (
    ExportRecord,
    InvalidCacheError,
    RemoteLayer,
    decode_config,
    decode_inline,
    encode_config,
    encode_inline,
    encode_manifest,
    go_time,
    parse_go_time,
    parse_manifest,
)

SCHEMA = json.loads(
    (
        Path(__file__).resolve().parents[3] / "docs/schemas/buildkit-cacheconfig-v0.schema.json"
    ).read_text()
)


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _layer(name: str) -> RemoteLayer:
    return RemoteLayer(
        _digest(f"blob {name}"),
        _digest(f"diff {name}"),
        100 + len(name),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        1_700_000_000_500_000_000,
    )


BASE, RUN, COPY = _layer("base"), _layer("run"), _layer("copy")


def _records() -> list[ExportRecord]:
    source = _digest("source")
    run = _digest("run")
    copy = _digest("copy")
    return [
        ExportRecord(source),
        ExportRecord(run, [[("", source)]], (BASE, RUN), 1),
        ExportRecord(copy, [[("/src", run)], [("", source)]], (BASE, RUN, COPY), 2),
    ]


def test_config_is_sorted_and_the_same_whatever_the_order_given() -> None:
    records = _records()
    first, layers = encode_config(records)
    for seed in range(5):
        shuffled = list(records)
        random.Random(seed).shuffle(shuffled)
        assert encode_config(shuffled)[0] == first
    config = json.loads(first)
    jsonschema.validate(config, SCHEMA)
    blobs = [entry["blob"] for entry in config["layers"]]
    assert blobs == sorted(blobs) == [layer.digest for layer in layers]
    assert [r["digest"] for r in config["records"]] == sorted(r.digest for r in records)


def test_parent_index_zero_is_omitted_and_no_parent_is_minus_one() -> None:
    config = json.loads(encode_config(_records())[0])
    by_blob = {entry["blob"]: entry for entry in config["layers"]}
    assert by_blob[BASE.digest]["parent"] == -1
    # Go's omitempty drops an index of 0; a reader defaults it to 0.
    for entry in config["layers"]:
        if entry["blob"] != BASE.digest:
            parent = entry.get("parent", 0)
            assert config["layers"][parent]["blob"] in (BASE.digest, RUN.digest)
            if parent == 0:
                assert "parent" not in entry


def test_config_round_trips_through_the_reader() -> None:
    data, layers = encode_config(_records())
    records = decode_config(data, {layer.digest: layer for layer in layers}, "test")
    assert records[_digest("copy")].chains == [(BASE, RUN, COPY)]
    assert records[_digest("run")].chains == [(BASE, RUN)]
    assert records[_digest("source")].chains == []
    assert records[_digest("copy")].inputs == [
        [("/src", _digest("run"))],
        [("", _digest("source"))],
    ]


def test_a_layer_the_manifest_does_not_describe_leaves_its_results_out() -> None:
    data, layers = encode_config(_records())
    described = {layer.digest: layer for layer in layers if layer != COPY}
    records = decode_config(data, described, "test")
    assert records[_digest("copy")].chains == []
    assert records[_digest("run")].chains == [(BASE, RUN)]


def test_annotated_config_needs_no_manifest() -> None:
    data, _ = encode_config(_records(), annotate=True)
    jsonschema.validate(json.loads(data), SCHEMA)
    records = decode_config(data, {}, "test")
    (chain,) = records[_digest("copy")].chains
    assert [layer.digest for layer in chain] == [BASE.digest, RUN.digest, COPY.digest]
    assert chain[-1].diff_id == COPY.diff_id and chain[-1].size == COPY.size


@pytest.mark.parametrize(
    ("oci", "image_manifest", "media_type"),
    [
        (True, False, "application/vnd.oci.image.index.v1+json"),
        (False, False, "application/vnd.docker.distribution.manifest.list.v2+json"),
        (True, True, "application/vnd.oci.image.manifest.v1+json"),
    ],
)
def test_manifest_forms_carry_the_config_and_layer_descriptors(
    oci: bool, image_manifest: bool, media_type: str
) -> None:
    config, layers = encode_config(_records())
    data, kind, config_digest = encode_manifest(
        config, layers, oci=oci, image_manifest=image_manifest
    )
    assert kind == media_type == json.loads(data)["mediaType"]
    parsed = parse_manifest(data, "test")
    assert parsed.config == config_digest == "sha256:" + hashlib.sha256(config).hexdigest()
    assert set(parsed.layers) == {layer.digest for layer in layers}
    assert parsed.layers[COPY.digest].diff_id == COPY.diff_id
    assert parsed.layers[COPY.digest].created == COPY.created
    if not oci:
        assert "docker" in parsed.layers[COPY.digest].media_type


def test_a_manifest_that_is_not_json_or_too_large_is_refused_by_name() -> None:
    with pytest.raises(InvalidCacheError, match=r"^registry x: not JSON"):
        parse_manifest(b"<html>", "registry x")
    with pytest.raises(InvalidCacheError, match="larger than 1 MiB"):
        parse_manifest(b" " * (2 << 20), "registry x")


@pytest.mark.parametrize(
    "doc",
    [
        b'{"manifests": [{"mediaType": "application/vnd.buildkit.cacheconfig.v0"}]}',
        b'{"manifests": [{"digest": "../../etc", "size": 1}, '
        b'{"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": "x"}]}',
        b'{"config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0"}, "layers": 7}',
        b'{"manifests": "none"}',
        b"[]",
    ],
)
def test_a_malformed_manifest_is_the_caches_fault_by_name(doc: bytes) -> None:
    with pytest.raises(InvalidCacheError, match=r"^registry x: "):
        parse_manifest(doc, "registry x")


@pytest.mark.parametrize(
    "doc",
    [
        b'{"layers": [{"blob": "sha256:../x"}]}',
        b'{"layers": "x", "records": []}',
        b'{"records": [{"digest": "sha256:aa", "layers": [{"layer": "one"}]}]}',
        b'{"records": [{"digest": "sha256:aa", "inputs": [[{"link": 9}]]}]}',
        b'{"records": [{"digest": 5}]}',
    ],
)
def test_a_malformed_config_is_the_caches_fault_by_name(doc: bytes) -> None:
    with pytest.raises(InvalidCacheError, match=r"^registry x: "):
        decode_config(doc, {}, "registry x")


def test_a_layer_without_its_diff_id_gives_no_result() -> None:
    data, layers = encode_config(_records())
    bare = {
        layer.digest: RemoteLayer(layer.digest, "", layer.size, layer.media_type)
        for layer in layers
    }
    records = decode_config(data, bare, "test")
    assert all(not r.chains for r in records.values())


def test_inline_records_name_the_images_layers_by_index() -> None:
    image = [BASE.digest, RUN.digest, COPY.digest]
    data = encode_inline(_records(), image)
    assert data is not None
    items = json.loads(data)
    by_digest = {item["digest"]: item for item in items}
    assert by_digest[_digest("copy")]["layers"][0]["layer"] == 2
    assert by_digest[_digest("run")]["layers"][0]["layer"] == 1
    assert "layers" not in by_digest[_digest("source")]
    # Read back from an image config, with its rootfs and history.
    config = {
        "rootfs": {"type": "layers", "diff_ids": [BASE.diff_id, RUN.diff_id, COPY.diff_id]},
        "history": [{"created": go_time(n)} for n in range(3)],
        "moby.buildkit.cache.v0": base64.b64encode(data).decode(),
    }
    descs = [RemoteLayer(x.digest, "", x.size, x.media_type) for x in (BASE, RUN, COPY)]
    records = decode_inline(config, descs, "test")
    (chain,) = records[_digest("copy")].chains
    assert [layer.diff_id for layer in chain] == [BASE.diff_id, RUN.diff_id, COPY.diff_id]
    assert chain[1].created == 1


def test_inline_drops_results_on_layers_the_image_lacks() -> None:
    assert encode_inline(_records(), [_digest("other")]) is None
    out_of_order = encode_inline(_records(), [RUN.digest, BASE.digest])
    assert out_of_order is not None
    run = next(i for i in json.loads(out_of_order) if i["digest"] == _digest("run"))
    assert run["chains"][0]["layers"] == [1, 0]


def test_go_time_is_rfc3339_with_nanoseconds() -> None:
    assert go_time(0) == "1970-01-01T00:00:00Z"
    assert go_time(1_700_000_000_250_000_000) == "2023-11-14T22:13:20.25Z"
    assert go_time(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"
    assert parse_go_time("2023-11-14T22:13:20.25Z") == 1_700_000_000_250_000_000
    assert parse_go_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000_000_000
    assert parse_go_time("yesterday") == 0


BUILDKIT = Path(__file__).with_name("buildkit")


def test_a_cache_buildkit_exported_reads_and_is_written_back_byte_for_byte() -> None:
    index = (BUILDKIT / "cache-index.json").read_bytes()
    data = (BUILDKIT / "cache-config.json").read_bytes()
    manifest = parse_manifest(index, "buildkit")
    assert manifest.config == "sha256:" + hashlib.sha256(data).hexdigest()
    raw = json.loads(data)
    jsonschema.validate(raw, SCHEMA)
    records = decode_config(data, manifest.layers, "buildkit")
    assert len(records) == len(raw["records"]) == 12
    with_results = [r for r in records.values() if r.chains]
    assert len(with_results) == 7
    # The deepest result stacks the base layer and the final stage's four.
    assert max(len(r.chains[0]) for r in with_results) == 5
    assert all(layer.diff_id.startswith("sha256:") for r in with_results for layer in r.chains[0])
    # The same records, encoded by llbkit, are BuildKit's bytes.
    again = [
        ExportRecord(
            item["digest"],
            records[item["digest"]].inputs,
            records[item["digest"]].chains[0] if records[item["digest"]].chains else None,
            parse_go_time(item["layers"][0]["createdAt"]) if "layers" in item else 0,
        )
        for item in raw["records"]
    ]
    assert encode_config(again)[0] == data
