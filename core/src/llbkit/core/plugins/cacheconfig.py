"""Several cache configs read as one, for a backend whose import reads several indexes (gha's
scopes, azblob's names): BuildKit's importers load each and combine the chains; here their
layers and records are concatenated, the indexes shifted (core merges records that share a
digest)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def merge_configs(configs: Sequence[bytes]) -> bytes:
    """One cache config holding the layers and records of all ``configs``; raises
    :class:`ValueError` for one that is not a JSON object."""
    if len(configs) == 1:
        return configs[0]
    layers: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for data in configs:
        try:
            doc = json.loads(data)
        except RecursionError:  # arrays or objects nested thousands deep
            raise ValueError("a cache config is nested too deeply") from None
        if not isinstance(doc, dict):
            raise ValueError("a cache config is not a JSON object")
        lo, ro = len(layers), len(records)
        for layer in doc.get("layers") or []:
            parent = int(layer.get("parent", 0))  # omitempty: an absent parent is layer 0
            layers.append({**layer, "parent": -1 if parent == -1 else parent + lo})
        for record in doc.get("records") or []:
            shifted = dict(record)
            if record.get("layers"):
                shifted["layers"] = [
                    {**r, "layer": int(r.get("layer", 0)) + lo} for r in record["layers"]
                ]
            if record.get("chains"):
                shifted["chains"] = [
                    {**c, "layers": [int(i) + lo for i in c.get("layers") or []]}
                    for c in record["chains"]
                ]
            if record.get("inputs"):
                shifted["inputs"] = [
                    [{**link, "link": int(link.get("link", 0)) + ro} for link in links or []]
                    for links in record["inputs"]
                ]
            records.append(shifted)
    return json.dumps({"layers": layers, "records": records}, separators=(",", ":")).encode()
