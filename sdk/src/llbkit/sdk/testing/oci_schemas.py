"""JSON schemas for the OCI image spec's documents (descriptor, manifest, index, config),
written from the spec's text (image-spec v1.1) for validating what the exporters write."""

from __future__ import annotations

from typing import Any

DIGEST = {"type": "string", "pattern": "^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"}
MEDIA_TYPE = {
    "type": "string",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$",
}
ANNOTATIONS = {"type": "object", "additionalProperties": {"type": "string"}}
PLATFORM = {
    "type": "object",
    "required": ["architecture", "os"],
    "properties": {
        "architecture": {"type": "string"},
        "os": {"type": "string"},
        "os.version": {"type": "string"},
        "variant": {"type": "string"},
        "os.features": {"type": "array", "items": {"type": "string"}},
    },
}
DESCRIPTOR: dict[str, Any] = {
    "type": "object",
    "required": ["mediaType", "digest", "size"],
    "properties": {
        "mediaType": MEDIA_TYPE,
        "digest": DIGEST,
        "size": {"type": "integer", "minimum": -9223372036854775808},
        "urls": {"type": "array", "items": {"type": "string", "format": "uri"}},
        "annotations": ANNOTATIONS,
        "platform": PLATFORM,
        "artifactType": MEDIA_TYPE,
        "data": {"type": "string"},
    },
}
MANIFEST: dict[str, Any] = {
    "type": "object",
    "required": ["schemaVersion", "config", "layers"],
    "properties": {
        "schemaVersion": {"type": "integer", "const": 2},
        "mediaType": MEDIA_TYPE,
        "artifactType": MEDIA_TYPE,
        "config": DESCRIPTOR,
        "layers": {"type": "array", "items": DESCRIPTOR},
        "subject": DESCRIPTOR,
        "annotations": ANNOTATIONS,
    },
}
INDEX: dict[str, Any] = {
    "type": "object",
    "required": ["schemaVersion", "manifests"],
    "properties": {
        "schemaVersion": {"type": "integer", "const": 2},
        "mediaType": MEDIA_TYPE,
        "artifactType": MEDIA_TYPE,
        "manifests": {"type": "array", "items": DESCRIPTOR},
        "subject": DESCRIPTOR,
        "annotations": ANNOTATIONS,
    },
}
STRINGS = {"type": ["array", "null"], "items": {"type": "string"}}
SET = {"type": ["object", "null"], "additionalProperties": {"type": "object"}}
CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["architecture", "os", "rootfs"],
    "properties": {
        "created": {"type": "string", "format": "date-time"},
        "author": {"type": "string"},
        "architecture": {"type": "string"},
        "os": {"type": "string"},
        "variant": {"type": "string"},
        "config": {
            "type": ["object", "null"],
            "properties": {
                "User": {"type": "string"},
                "ExposedPorts": SET,
                "Env": STRINGS,
                "Entrypoint": STRINGS,
                "Cmd": STRINGS,
                "Volumes": SET,
                "WorkingDir": {"type": "string"},
                "Labels": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                "StopSignal": {"type": "string"},
            },
        },
        "rootfs": {
            "type": "object",
            "required": ["diff_ids", "type"],
            "properties": {
                "diff_ids": {"type": "array", "items": DIGEST},
                "type": {"type": "string", "enum": ["layers"]},
            },
        },
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "created": {"type": "string", "format": "date-time"},
                    "author": {"type": "string"},
                    "created_by": {"type": "string"},
                    "comment": {"type": "string"},
                    "empty_layer": {"type": "boolean"},
                },
            },
        },
    },
}
