"""A cache config's records as BuildKit's importer walks them."""

from __future__ import annotations

import json

from llbkit.core.cache.remote import RemoteLayer, decode_config

BASE, RUN = "sha256:" + "b" * 64, "sha256:" + "c" * 64
OTHER = "sha256:" + "d" * 64


def blob(n: int) -> str:
    return f"sha256:{n:064x}"


LAYERS = {
    blob(n): RemoteLayer(blob(n), blob(100 + n), 10, "application/vnd.oci.image.layer.v1.tar+gzip")
    for n in (1, 2)
}


def config() -> bytes:
    """Two bases, and one op (one digest) on each: two records, each its own result."""
    return json.dumps(
        {
            "layers": [{"blob": blob(1), "parent": -1}, {"blob": blob(2), "parent": -1}],
            "records": [
                {"digest": BASE},
                {"digest": OTHER},
                {
                    "digest": RUN,
                    "layers": [{"layer": 0}],
                    "inputs": [[{"link": 0, "selector": "sha256:s"}]],
                },
                {"digest": RUN, "layers": [{"layer": 1}], "inputs": [[{"link": 1}]]},
            ],
        }
    ).encode()


def test_one_digest_on_other_inputs_is_another_record() -> None:
    graph = decode_config(config(), LAYERS, "cache").graph
    base, other = graph.root(BASE), graph.root(OTHER)
    (first,) = graph.linked(base, 0, RUN, "sha256:s")
    (second,) = graph.linked(other, 0, RUN, "")
    assert [c[0].digest for c in graph.nodes[first].chains] == [blob(1)]
    assert [c[0].digest for c in graph.nodes[second].chains] == [blob(2)]
    assert not graph.linked(base, 0, RUN, "")  # another selector
    assert not graph.linked(base, 1, RUN, "sha256:s")  # another input
    assert not graph.root(RUN)  # a record with inputs is not found by its digest alone


def test_records_of_two_caches_keep_their_links() -> None:
    graph = decode_config(config(), LAYERS, "one").graph
    graph.extend(decode_config(config(), LAYERS, "two").graph)
    assert len(graph.root(BASE)) == 1  # a digest alone: one record
    assert len(graph.linked(graph.root(BASE), 0, RUN, "sha256:s")) == 2
