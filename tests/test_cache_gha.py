"""``--export-cache type=gha`` and ``--import-cache type=gha`` end to end: a fake GitHub Actions
cache service on loopback, real builds on fresh state roots, as two CI jobs share a cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llbkit.sdk.testing.azurite import azurite  # noqa: F401 - a fixture, used by name
from tests.test_cache_export_import import (  # the same Dockerfile, build and log readers
    build,
    context,  # noqa: F401 - a fixture, used by name
    digest_of,
    jsonschema_validate,
    ran,
    registry,  # noqa: F401 - a fixture, used by name
    steps,
)

pytestmark = [pytest.mark.root, pytest.mark.services]

MAIN = "refs/heads/main"
INDEX = "index-buildkit-1-" + hashlib.sha256(MAIN.encode()).hexdigest()[:8]


@pytest.mark.parametrize("throttle_every", [0, 4])
@pytest.mark.parametrize("protocol", [1, 2])
def test_gha_cache_round_trip_even_when_throttled(
    registry: str,  # noqa: F811 - the fixture imported above
    context: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    *,
    throttle_every: int,
    protocol: int,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Job A exports everything, job B on a fresh root imports it: every step is cached and
    the image is the same. A service answering every fourth request with 429 is waited out.
    v2 keeps the bytes in Azurite; job A names it with url_v2=, job B only has what a runner
    sets in the environment."""
    from llbkit.sdk.testing import GhaCacheService, make_gha_token

    runner = ("ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL", "ACTIONS_CACHE_SERVICE_V2")
    for name in (*runner, "ACTIONS_RUNTIME_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    azure = request.getfixturevalue("azurite") if protocol == 2 else None
    token = make_gha_token([(MAIN, 3)])
    with GhaCacheService(throttle_every=throttle_every, v2=azure) as service:
        if protocol == 2:
            cache, imported = f"type=gha,url_v2={service.url},token={token}", "type=gha"
        else:
            cache = imported = f"type=gha,url={service.url},token={token}"
        first = build(
            registry,
            tmp_path / "A",
            context,
            "--export-cache",
            f"{cache},mode=max",
            "--metadata-file",
            str(tmp_path / "A.json"),
            image="gha:a",
        )
        assert first.returncode == 0, first.stderr
        assert token not in first.stderr
        keys = service.keys(MAIN)
        assert keys[-1] == f"{INDEX}#1", keys  # the index is written last
        assert all(k.startswith("buildkit-blob-1-sha256:") for k in keys[:-1]), keys
        config = json.loads(service.content(f"{INDEX}#1"))
        jsonschema_validate(config)
        assert all("annotations" in layer for layer in config["layers"])
        assert {f"buildkit-blob-1-{layer['blob']}" for layer in config["layers"]} <= set(keys)

        if protocol == 2:  # what a runner sets, read as buildctl reads it
            monkeypatch.setenv("ACTIONS_RESULTS_URL", service.url)
            monkeypatch.setenv("ACTIONS_CACHE_SERVICE_V2", "true")
            monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", token)
        second = build(
            registry,
            tmp_path / "B",
            context,
            "--import-cache",
            imported,
            "--metadata-file",
            str(tmp_path / "B.json"),
            image="gha:b",
        )
        assert second.returncode == 0, second.stderr
        assert set(steps(second.stderr).values()) == {"CACHED"}, second.stderr
        assert not ran(second.stderr)
        assert digest_of(tmp_path / "B.json") == digest_of(tmp_path / "A.json")
        assert token not in second.stderr
        if throttle_every:
            assert any(code == 429 for _, _, code in service.requests)
        if protocol == 2:  # every call was Twirp's; the bytes never went through the service
            assert all("/twirp/" in path for _, path, _ in service.requests)
            assert "sig=" not in first.stderr + second.stderr
