"""Results held by ``Controller.build``: readable through the Result contract, never writable."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llbkit.core.control import (
    Controller,
    EmbeddedClient,
    EngineConfig,
    ExporterRequest,
    LayerOptions,
    SolveRequest,
    new_ref,
)
from llbkit.sdk import llb

DEFINITION = llb.scratch().file(llb.mkfile("/a", 0o644, b"a\n")).marshal().to_bytes()


def _request() -> SolveRequest:
    return SolveRequest(ref=new_ref(), session=EmbeddedClient(), definition=DEFINITION)


@pytest.mark.root
def test_a_held_result_is_read_only_and_stays_as_built(tmp_path: Path) -> None:
    async def main(controller: Controller) -> tuple[str, str, int]:
        async with controller.build(_request()) as outcome:
            ref = outcome.result.refs["linux/amd64"]
            async with ref.mount() as root:
                text = (root / "a").read_text()
                with pytest.raises(OSError, match="Read-only file system"):
                    (root / "a").write_text("changed\n")
            layers = await ref.layers(LayerOptions())
        async with (
            controller.build(_request()) as again,
            again.result.refs["linux/amd64"].mount() as root,
        ):
            return text, (root / "a").read_text(), len(layers)

    async def run() -> tuple[str, str, int]:
        async with Controller.open(str(tmp_path / "state"), EngineConfig(gc=False)) as c:
            return await main(c)

    assert anyio.run(run) == ("a\n", "a\n", 1)


def test_each_exporter_answers_for_itself(tmp_path: Path) -> None:
    request = SolveRequest(
        ref=new_ref(),
        session=EmbeddedClient(),
        definition=DEFINITION,
        exporters=[
            ExporterRequest("oci", {"dest": str(tmp_path / "a.tar")}),
            ExporterRequest("docker", {"dest": str(tmp_path / "b.tar")}),
        ],
    )
    with Controller.open(tmp_path / "state", EngineConfig(gc=False)) as controller:
        response = anyio.run(controller.solve, request)
    oci, docker = response.exporter_responses
    assert oci["containerimage.digest"] != docker["containerimage.digest"]
    assert response.exporter_response["containerimage.digest"] == docker["containerimage.digest"]


def test_an_entitlement_the_engine_does_not_grant_is_refused_up_front(tmp_path: Path) -> None:
    from llbkit.core.control import UserError

    with Controller.open(tmp_path / "state", EngineConfig(gc=False)) as controller:
        for asked, message in (
            ("network.host", "granting entitlement network.host is not allowed"),
            ("network.hots", "unknown entitlement 'network.hots'"),
        ):
            request = SolveRequest(
                ref=new_ref(), session=EmbeddedClient(), definition=DEFINITION, entitlements=[asked]
            )
            with pytest.raises(UserError, match=message):
                anyio.run(controller.solve, request)


def test_a_state_root_inside_a_local_context_is_never_sent(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "app.txt").write_text("app\n")
    state = llb.scratch().file(llb.copy(llb.local("ctx"), "/", "/out"))
    data = state.marshal().to_bytes()
    with Controller.open(context / "state", EngineConfig(gc=False)) as controller:
        for _ in range(2):
            request = SolveRequest(
                ref=new_ref(),
                session=EmbeddedClient(locals={"ctx": context}),
                definition=data,
            )

            async def main(request: SolveRequest = request) -> list[str]:
                async with (
                    controller.build(request) as outcome,
                    outcome.result.refs["linux/amd64"].mount() as root,
                ):
                    return sorted(p.name for p in (root / "out").iterdir())

            assert anyio.run(main) == ["app.txt"]


def test_a_definition_that_is_not_llb_is_named_as_the_request_field(tmp_path: Path) -> None:
    from llbkit.core.control import UserError

    request = SolveRequest(ref=new_ref(), session=EmbeddedClient(), definition=b"\x01\x02")
    expected = r"^SolveRequest\.definition: not an LLB definition"
    with (
        Controller.open(tmp_path / "state", EngineConfig(gc=False)) as controller,
        pytest.raises(UserError, match=expected),
    ):
        anyio.run(controller.solve, request)


def test_a_local_directory_that_is_not_there_is_named(tmp_path: Path) -> None:
    from llbkit.core.control import UserError

    site = llb.scratch().file(llb.copy(llb.local("site"), "/", "/www"))
    request = SolveRequest(
        ref=new_ref(),
        session=EmbeddedClient(locals={"site": tmp_path / "nope"}),
        definition=site.marshal().to_bytes(),
    )
    expected = r"local directory 'site' \(.*/nope\) is not a directory"
    with (
        Controller.open(tmp_path / "state", EngineConfig(gc=False)) as controller,
        pytest.raises(UserError, match=expected),
    ):
        anyio.run(controller.solve, request)


def test_every_export_job_made_is_closed_when_a_later_one_is_refused(tmp_path: Path) -> None:
    from typing import Any

    from llbkit.core.control import UnknownOptionError
    from llbkit.core.plugins.registry import PluginRegistry

    closed: list[str] = []

    class Recording:
        api_version = 2
        description = "exporting nothing"

        def __init__(self, ctx: Any) -> None:
            self.name = ctx.name

        async def resolve(self, attrs: Any) -> Any:
            if attrs:
                raise UnknownOptionError(f"exporter {self.name}", sorted(attrs)[0], ())
            return self

        async def export(self, result: Any, info: Any) -> dict[str, str]:
            return {}

        async def finalize(self, info: Any) -> dict[str, str]:
            return {}

        async def aclose(self) -> None:
            closed.append(self.name)

    registry = PluginRegistry.for_testing(
        {"llbkit.exporters": {"first": Recording, "second": Recording}}
    )
    request = SolveRequest(
        ref=new_ref(),
        session=EmbeddedClient(),
        definition=DEFINITION,
        exporters=[ExporterRequest("first", {}), ExporterRequest("second", {"bogus": "1"})],
    )
    with (
        Controller.open(tmp_path / "state", EngineConfig(gc=False), registry) as controller,
        pytest.raises(UnknownOptionError, match="bogus"),
    ):
        anyio.run(controller.solve, request)
    assert closed == ["first"]
