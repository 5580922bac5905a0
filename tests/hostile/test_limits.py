"""A small layer cannot take the machine: its entry count and what it expands to are bounded
(``[llbkit] max-layer-entries``, ``max-layer-size``), and a header's claim never sizes an
allocation (Go's 1 MiB bound on a PAX or GNU long-name header, as BuildKit's reader has)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from llbkit.core.config import load_config
from llbkit.core.errors import ConfigError
from llbkit.core.fs.iterative import walk
from llbkit.core.snapshot.untar import LayerError, LayerLimits, apply_tar, set_limits
from tests.hostile.cli import dockerfile_build, error_line
from tests.hostile.test_oci_layout import layout


@pytest.fixture
def limits() -> Iterator[None]:
    set_limits(LayerLimits(entries=10, size=1 << 20))
    yield
    set_limits(LayerLimits())


def files(count: int, size: int = 0) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for n in range(count):
            info = tarfile.TarInfo(f"f{n}")
            info.size = size
            tar.addfile(info, io.BytesIO(b"\0" * size))
    return gzip.compress(out.getvalue(), mtime=0)


def test_a_layer_past_its_entry_limit_is_refused(tmp_path: Path, limits: None) -> None:
    apply_tar(io.BytesIO(files(10)), str(tmp_path / "ok"))
    with pytest.raises(LayerError) as refused:
        apply_tar(io.BytesIO(files(11)), str(tmp_path / "t"), what="layer sha256:abc")
    assert str(refused.value) == (
        "layer sha256:abc: cannot apply: more than 10 entries ([llbkit] max-layer-entries = 10)"
    )
    assert sum(len(f) for _, _, f in walk(str(tmp_path / "t"))) == 10


def test_a_layer_that_expands_past_its_size_limit_is_refused(tmp_path: Path, limits: None) -> None:
    bomb = files(1, 64 << 20)  # 64 MiB of zeros in about 64 kB
    assert len(bomb) < 100_000
    with pytest.raises(LayerError, match=r"f0: the layer expands past 1048576 bytes "):
        apply_tar(io.BytesIO(bomb), str(tmp_path / "t"))
    assert not (tmp_path / "t" / "f0").exists()  # refused before a byte of it is written


def test_an_extended_header_is_never_read_whole_past_one_mib(tmp_path: Path) -> None:
    """A PAX header claiming 256 MiB (of gzip'ed zeros): refused from its claim, in Go's
    words, without reading it into memory."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 256 << 20
    raw = header.tobuf(format=tarfile.USTAR_FORMAT)
    stream = gzip.compress(raw + b"\0" * header.size, compresslevel=1, mtime=0)
    tracemalloc.start()
    try:
        with pytest.raises(LayerError, match=r"header field too long"):
            apply_tar(io.BytesIO(stream), str(tmp_path / "t"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_the_limits_are_read_from_the_config_and_name_the_layer(tmp_path: Path) -> None:
    store = tmp_path / "store"
    blob = files(5)
    digest = layout(store, [blob])
    layer = hashlib.sha256(blob).hexdigest()
    config = tmp_path / "buildkitd.toml"
    config.write_text("[llbkit]\nmax-layer-entries = 3\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\nCOPY --from=base /f0 /f0\n")
    done = dockerfile_build(
        tmp_path / "root",
        ctx,
        "--oci-layout",
        f"store={store}",
        "--opt",
        f"context:base=oci-layout://store@{digest}",
        config=config,
    )
    line = error_line(done)
    assert f"layer sha256:{layer}: cannot unpack: more than 3 entries" in line, line
    assert line.endswith("([llbkit] max-layer-entries = 3)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max-layer-entries = 0", "llbkit.max-layer-entries = 0 is not a positive whole number"),
        ('max-layer-entries = "x"', "llbkit.max-layer-entries = 'x' is not a positive"),
        ('max-layer-size = "lots"', "llbkit.max-layer-size: 'lots' is not a size"),
        ("max-layer-size = 0", "llbkit.max-layer-size must be more than 0 bytes"),
    ],
)
def test_a_bad_limit_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_text(f"[llbkit]\n{text}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert message in str(refused.value)


def test_the_limits_default_to_generous_values(tmp_path: Path) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_text('[llbkit]\nmax-layer-size = "2GiB"\n')
    config = load_config(path)
    assert config.max_layer_size == 2 << 30
    assert config.max_layer_entries == 10_000_000


def test_a_manifest_listing_thousands_of_layers_is_pulled_a_few_at_a_time(
    tmp_path: Path,
) -> None:
    """What a manifest lists never sizes the work started at once: four layers of one image
    are fetched at a time (BuildKit's resolver limits fetches per repository to four)."""
    import contextlib
    from types import SimpleNamespace

    import anyio

    from llbkit.core.reference import parse_reference
    from llbkit.core.sources.image import ImageJob

    layers = [SimpleNamespace(digest=f"sha256:{n:064x}") for n in range(2000)]
    running, most = 0, 0

    class Driver:
        async def resolve_image(self, *_: object) -> object:
            return SimpleNamespace(layers=layers)

        def client(self, _: object) -> contextlib.AbstractAsyncContextManager[None]:
            return contextlib.nullcontext()  # type: ignore[return-value]

        async def blob(self, _ref: object, desc: SimpleNamespace, *_: object, **__: object) -> Path:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await anyio.sleep(0)
            running -= 1
            return tmp_path / desc.digest

    job = ImageJob("x", parse_reference("example.com/x"), None, driver=Driver())  # type: ignore[arg-type]
    _, pulled, paths = anyio.run(job._pull, None)
    assert len(pulled) == len(paths) == 2000
    assert most == 4


def test_an_added_archive_is_bounded_as_a_layer_is(tmp_path: Path) -> None:
    """``ADD a.tar`` unpacks with the engine's limits too, in one line naming the archive."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nADD a.tar.gz /x/\n")
    (ctx / "a.tar.gz").write_bytes(files(5))
    config = tmp_path / "buildkitd.toml"
    config.write_text("[llbkit]\nmax-layer-entries = 3\n")
    line = error_line(dockerfile_build(tmp_path / "root", ctx, config=config))
    assert line.endswith(
        "ADD a.tar.gz /x/: unpack a.tar.gz to /x/: more than 3 entries "
        "([llbkit] max-layer-entries = 3)"
    )
