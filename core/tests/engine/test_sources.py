"""Sources fetched for real: a local directory, an HTTP server, a git repository."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llbkit.core.solver.solver import BuildFailed
from llbkit.sdk import llb

from .helpers import build, cached, files, open_engine


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()


def test_http_with_checksum_filename_and_mode(tmp_path: Path, server: tuple[str, Path]) -> None:
    url, served = server
    (served / "tool.sh").write_bytes(b"#!/bin/sh\necho tool\n")
    digest = "sha256:" + hashlib.sha256(b"#!/bin/sh\necho tool\n").hexdigest()
    state = llb.http(f"{url}/tool.sh", checksum=digest, filename="renamed", chmod=0o751)
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, state)
        assert files(engine, outcome) == {"renamed": "#!/bin/sh\necho tool\n"}
        assert outcome.result is not None
        with engine.store.view(outcome.result.chain) as root:  # type: ignore[union-attr]
            assert (root / "renamed").stat().st_mode & 0o777 == 0o751


@pytest.mark.parametrize(
    ("path", "name"), [("", "download"), ("/", "download"), ("/dir/", "dir"), ("/a%2520b", "a%20b")]
)
def test_http_names_a_download_as_buildkit_does(
    tmp_path: Path, server: tuple[str, Path], path: str, name: str
) -> None:
    """By the URL path's last name, a folder's too (``/dir/`` is ``dir``), or ``download``;
    with a checksum too (the name is part of the key, as BuildKit's)."""
    url, served = server
    (served / "index.html").write_text("root\n")
    (served / "dir").mkdir()
    (served / "dir" / "index.html").write_text("dir\n")
    (served / "a%20b").write_text("ab\n")
    with open_engine(tmp_path / "root") as engine:
        assert list(files(engine, build(engine, llb.http(url + path)))) == [name]
        data = next(iter(files(engine, build(engine, llb.http(url + path))).values()))
        digest = "sha256:" + hashlib.sha256(data.encode()).hexdigest()
        assert list(files(engine, build(engine, llb.http(url + path, checksum=digest)))) == [name]


def test_http_wrong_checksum_is_a_clear_error(tmp_path: Path, server: tuple[str, Path]) -> None:
    url, served = server
    (served / "file").write_bytes(b"actual\n")
    wrong = "sha256:" + "0" * 64
    with open_engine(tmp_path / "root") as engine, pytest.raises(BuildFailed) as err:
        build(engine, llb.http(f"{url}/file", checksum=wrong))
    actual = hashlib.sha256(b"actual\n").hexdigest()
    assert f"digest mismatch: expected {wrong}, got sha256:{actual}" in str(err.value)


def test_http_without_checksum_is_keyed_by_content(
    tmp_path: Path, server: tuple[str, Path]
) -> None:
    url, served = server
    (served / "data.txt").write_text("v1\n")
    state = llb.http(f"{url}/data.txt")
    with open_engine(tmp_path / "root") as engine:
        assert files(engine, build(engine, state)) == {"data.txt": "v1\n"}
        assert f"{url}/data.txt" in cached(build(engine, state))
        (served / "data.txt").write_text("v2\n")
        assert files(engine, build(engine, state)) == {"data.txt": "v2\n"}


def test_http_asks_whether_what_it_downloaded_still_holds(tmp_path: Path) -> None:
    """As BuildKit's: a URL downloaded before with an ETag is asked about with it (a HEAD with
    ``If-None-Match``); while the server says it holds, nothing is downloaded again, and the
    step is cached. New content (another ETag) is downloaded."""
    served = {"body": b"v1\n", "etag": '"one"'}
    asked: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            asked.append((self.command, self.headers.get("If-None-Match", "")))
            if served["etag"] in self.headers.get("If-None-Match", ""):
                self.send_response(304)
                self.send_header("ETag", served["etag"])
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", served["etag"])
            self.send_header("Content-Length", str(len(served["body"])))
            self.end_headers()
            if body:
                self.wfile.write(served["body"])

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/data.txt"
    try:
        with open_engine(tmp_path / "root") as engine:
            assert files(engine, build(engine, llb.http(url))) == {"data.txt": "v1\n"}
            assert asked == [("GET", "")]
            asked.clear()
            again = build(engine, llb.http(url))
            assert url in cached(again) and files(engine, again) == {"data.txt": "v1\n"}
            assert asked == [("HEAD", '"one"')]
            asked.clear()
            served.update(body=b"v2\n", etag='"two"')
            assert files(engine, build(engine, llb.http(url))) == {"data.txt": "v2\n"}
            assert asked == [("HEAD", '"one"'), ("GET", "")]
    finally:
        httpd.shutdown()


def test_http_missing_file(tmp_path: Path, server: tuple[str, Path]) -> None:
    url, _ = server
    with open_engine(tmp_path / "root") as engine, pytest.raises(BuildFailed) as err:
        build(engine, llb.http(f"{url}/nope"))
    assert "invalid response status 404" in str(err.value)


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "sub").mkdir()
    (repo / "top.txt").write_text("v1\n")
    (repo / "sub" / "inner.txt").write_text("inner\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    _git(repo, "tag", "v1")
    (repo / "top.txt").write_text("v2\n")
    _git(repo, "commit", "-qam", "two")
    return repo


def _git_state(repo: Path, ref: str, subdir: str = "", keep: bool = False) -> llb.State:
    attrs = {"git.fullurl": f"file://{repo}"}
    if keep:
        attrs["git.keepgitdir"] = "true"
    return llb.source(f"git://example.com/repo#{ref}" + (f":{subdir}" if subdir else ""), attrs)


def test_git_ref_subdir_and_keep_git_dir(tmp_path: Path, repo: Path) -> None:
    with open_engine(tmp_path / "root") as engine:
        tagged = build(engine, _git_state(repo, "v1"))
        assert files(engine, tagged) == {
            "sub": "<dir>",
            "sub/inner.txt": "inner\n",
            "top.txt": "v1\n",
        }
        head = build(engine, _git_state(repo, "main"))
        assert files(engine, head)["top.txt"] == "v2\n"
        sub = build(engine, _git_state(repo, "main", subdir="sub"))
        assert files(engine, sub) == {"inner.txt": "inner\n"}
        kept = build(engine, _git_state(repo, "main", keep=True))
        assert "top.txt" in files(engine, kept)
        assert any(name.startswith(".git") for name in files(engine, kept))


def test_git_unknown_ref(tmp_path: Path, repo: Path) -> None:
    with open_engine(tmp_path / "root") as engine, pytest.raises(BuildFailed) as err:
        build(engine, _git_state(repo, "no-such-branch"))
    assert "ref 'no-such-branch' not found" in str(err.value)


def test_local_patterns(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "main.py").write_text("main\n")
    (ctx / "src" / "skip.pyc").write_text("compiled\n")
    (ctx / "README").write_text("readme\n")
    state = llb.local("ctx", include_patterns=["src"], exclude_patterns=["**/*.pyc"])
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, state, locals={"ctx": ctx})
        assert files(engine, outcome) == {"src": "<dir>", "src/main.py": "main\n"}


def test_local_rereads_only_changed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for n in range(50):
        (ctx / f"f{n}").write_text(f"{n}\n")
    reads: list[str] = []
    real = hashlib.file_digest

    def counting(handle, digest):  # type: ignore[no-untyped-def]
        reads.append(handle.name)
        return real(handle, digest)

    monkeypatch.setattr("llbkit.core.fs.contenthash.hashlib.file_digest", counting)
    state = llb.local("ctx")
    with open_engine(tmp_path / "root") as engine:
        build(engine, state, locals={"ctx": ctx})
        assert len(reads) == 50
        reads.clear()
        build(engine, state, locals={"ctx": ctx})
        assert reads == []
        (ctx / "f7").write_text("seven\n")
        build(engine, state, locals={"ctx": ctx})
        assert [os.path.basename(r) for r in reads] == ["f7"]


def test_missing_local_names_the_flag(tmp_path: Path) -> None:
    with open_engine(tmp_path / "root") as engine, pytest.raises(BuildFailed) as err:
        build(engine, llb.local("context"))
    assert "--local context=<path>" in str(err.value)


def test_local_follow_paths_bring_symlink_targets(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "real").mkdir(parents=True)
    (ctx / "real" / "data").write_text("data\n")
    (ctx / "other").write_text("other\n")
    os.symlink("real/data", ctx / "link")
    state = llb.local("ctx", include_patterns=["link"], follow_paths=["link"])
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, state, locals={"ctx": ctx})
        assert files(engine, outcome) == {"real": "<dir>", "real/data": "data\n", "link": "data\n"}
