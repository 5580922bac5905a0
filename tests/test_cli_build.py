"""``llbkit build``, ``du`` and ``prune`` as a user runs them: a subprocess, real files."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from llbkit.sdk import llb

LLBKIT = [sys.executable, "-m", "llbkit.core"]
PLATFORM = llb.Platform("linux", "amd64")


def definition(state: llb.State) -> bytes:
    return state.marshal(PLATFORM).to_bytes()


def llbkit(root: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*LLBKIT, "--root", str(root), *args], input=stdin, capture_output=True)


def simple() -> bytes:
    base = llb.scratch().file(llb.mkdir("/etc", 0o755).mkfile("/etc/app.conf", 0o644, b"x=1\n"))
    return definition(base.file(llb.mkfile("/hello", 0o600, b"hello\n")))


def test_plain_progress_in_buildkits_format(tmp_path: Path) -> None:
    first = llbkit(tmp_path / "root", "build", "--progress", "plain", stdin=simple())
    assert first.returncode == 0, first.stderr
    text = first.stderr.decode()
    assert "#1 mkdir /etc, mkfile /etc/app.conf\n" in text
    assert re.search(r"^#1 DONE \d+\.\ds$", text, re.M)
    assert re.search(r"^#2 mkfile /hello\n#2 DONE \d+\.\ds$", text, re.M)
    again = llbkit(tmp_path / "root", "build", "--progress", "plain", stdin=simple())
    # As buildctl v0.11.6 shows this rebuild from BuildKit: every step, inputs first, each
    # cached but the one without inputs, which is done (working out its key was its work).
    shown = re.sub(r"DONE \d+\.\ds", "DONE", again.stderr.decode())
    assert shown == (
        "#1 mkdir /etc, mkfile /etc/app.conf\n#1 DONE\n\n#2 mkfile /hello\n#2 CACHED\n"
    )


def test_rawjson_is_one_solve_status_per_line(tmp_path: Path) -> None:
    done = llbkit(tmp_path / "root", "build", "--progress", "rawjson", stdin=simple())
    assert done.returncode == 0
    statuses = [json.loads(line) for line in done.stderr.decode().splitlines()]
    vertexes = [v for s in statuses for v in s.get("vertexes", [])]
    assert {v["name"] for v in vertexes} == {"mkdir /etc, mkfile /etc/app.conf", "mkfile /hello"}
    assert all(v["digest"].startswith("sha256:") for v in vertexes)
    assert any("completed" in v for v in vertexes)


def test_local_and_tar_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = llbkit(
        tmp_path / "root",
        "build",
        "--progress",
        "quiet",
        "-o",
        f"type=local,dest={out}",
        "-o",
        "type=tar,dest=-",
        "--metadata-file",
        str(tmp_path / "meta.json"),
        stdin=simple(),
    )
    assert done.returncode == 0, done.stderr
    assert (out / "hello").read_text() == "hello\n"
    assert (out / "hello").stat().st_mode & 0o777 == 0o600
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        assert tar.getnames() == ["etc", "etc/app.conf", "hello"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["llbkit.result.key"].startswith("sha256:")


def test_a_local_output_is_the_clients_own_and_a_tarball_keeps_owners(tmp_path: Path) -> None:
    """As buildctl writes them: a local output's files belong to whoever runs the build (as
    llbkit's client of a daemon makes them too); a tarball keeps the image's owners."""
    owned = definition(llb.scratch().file(llb.mkfile("/owned", 0o750, b"x", owner="1:2")))
    out = tmp_path / "out"
    args = ("build", "--progress", "quiet", "-o", f"type=local,dest={out}")
    done = llbkit(tmp_path / "root", *args, "-o", "type=tar,dest=-", stdin=owned)
    assert done.returncode == 0, done.stderr
    st = (out / "owned").stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert st.st_mode & 0o7777 == 0o750
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        member = tar.getmember("owned")
        assert (member.uid, member.gid) == (1, 2)


def test_local_context_and_no_cache(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "in.txt").write_text("from the context\n")
    data = definition(llb.scratch().file(llb.copy(llb.local("context"), "/in.txt", "/out.txt")))
    args = ("build", "--progress", "plain", "--local", f"context={ctx}")
    assert llbkit(tmp_path / "root", *args, stdin=data).returncode == 0
    again = llbkit(tmp_path / "root", *args, stdin=data).stderr.decode()
    assert "CACHED" in again
    fresh = llbkit(tmp_path / "root", *args, "--no-cache", stdin=data).stderr.decode()
    assert "CACHED" not in fresh


def test_a_state_root_inside_the_context_is_not_part_of_it(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "in.txt").write_text("mine\n")
    data = definition(llb.scratch().file(llb.copy(llb.local("context"), "/", "/ctx/")))
    for n in range(2):  # the second build would see the first one's mirror inside the root
        out = tmp_path / f"out{n}"
        args = ("build", "--local", f"context={ctx}", "-o", f"type=local,dest={out}")
        done = llbkit(ctx / ".state", *args, stdin=data)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in (out / "ctx").iterdir()) == ["in.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--export-cache", "type=local,dest=x,colour=red"),
            "cache backend local",
        ),
        (("--export-cache", "type=registry,ref=x,mode=all"), "mode='all' is not min or max"),
        (("--import-cache", "type=nosuch,src=x"), "unknown cache backend 'nosuch'"),
        (("--import-cache", "type=inline"), "--import-cache type=registry,ref=<image>"),
        (
            ("--frontend", "nosuch.v0"),
            "unknown frontend 'nosuch.v0'",
        ),
        (
            ("--opt", "target=x"),
            "--opt is for a frontend",
        ),
        (("-o", "type=bogus"), "unknown exporter 'bogus'"),
        (("-o", "dest=x"), "--output 'dest=x': type= is required"),
        (("-o", "type=local,dest=x,colour=red"), "colour"),
        (("--secret", "id=s,src=/no/such/file"), "cannot read /no/such/file"),
    ],
)
def test_bad_flags_are_one_clear_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = llbkit(tmp_path / "root", "build", *args, stdin=simple())
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_a_dockerfile_build_without_its_directory_names_the_flag(tmp_path: Path) -> None:
    """As buildctl shows it: the .dockerignore read, begun first, and the read of the
    Dockerfile fail (the failed steps' blocks follow), then one error line saying which flag
    is missing."""
    done = llbkit(tmp_path / "root", "build", "--frontend", "dockerfile.v0", stdin=simple())
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines[0] == "#1 [internal] load .dockerignore"
    assert lines[1].startswith("#1 ERROR: ") and "use --local context=<path>" in lines[1]
    assert lines[2:4] == ["", "#2 [internal] load build definition from Dockerfile"]
    assert lines[4].startswith(("#2 ERROR: ", "#2 CANCELED")), lines
    block = lines.index("------")
    assert lines[block : block + 3] == ["------", " > [internal] load .dockerignore:", "------"]
    assert lines[-1].startswith("error: ") and "use --local " in lines[-1]
    assert "Traceback" not in done.stderr.decode()


def test_a_dockerfile_build_that_never_reads_its_context_needs_none(tmp_path: Path) -> None:
    """As with BuildKit: without ``--local context``, the .dockerignore read fails its own step
    and the build goes on, since nothing else reads the context."""
    (tmp_path / "df").mkdir()
    (tmp_path / "df" / "Dockerfile").write_text("FROM scratch\nLABEL a=b\n")
    args = ("build", "--frontend", "dockerfile.v0", "--local", f"dockerfile={tmp_path}/df")
    done = llbkit(tmp_path / "root", *args)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.decode().splitlines()
    assert lines[:2] == ["#1 [internal] load .dockerignore", lines[1]]
    assert lines[1].startswith("#1 ERROR: ") and "use --local context=<path>" in lines[1]


def test_a_missing_local_directory_is_named(tmp_path: Path) -> None:
    data = definition(llb.local("context"))
    done = llbkit(tmp_path / "root", "build", "--progress", "quiet", stdin=data)
    assert done.returncode == 1
    assert "use --local context=<path>" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_an_archive_goes_to_a_file_or_standard_output_as_with_buildctl(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    into_dir = llbkit(
        tmp_path / "root", "build", "-o", f"type=tar,dest={tmp_path}/adir", stdin=simple()
    )
    assert (into_dir.returncode, into_dir.stderr.decode()) == (
        1,
        f"error: --output 'type=tar,dest={tmp_path}/adir': {tmp_path}/adir is a directory; "
        "dest= names a file\n",
    )
    # A path that cannot be written fails before the build, as buildctl's does.
    (tmp_path / "afile").write_text("")
    under_a_file = llbkit(
        tmp_path / "root", "build", "-o", f"type=tar,dest={tmp_path}/afile/x.tar", stdin=simple()
    )
    assert (under_a_file.returncode, under_a_file.stderr.decode()) == (
        1,
        f"error: --output 'type=tar,dest={tmp_path}/afile/x.tar': cannot write "
        f"{tmp_path}/afile/x.tar: Not a directory\n",
    )
    nested = llbkit(
        tmp_path / "root", "build", "-o", f"type=tar,dest={tmp_path}/new/dir/x.tar", stdin=simple()
    )
    assert nested.returncode == 0 and (tmp_path / "new/dir/x.tar").is_file()
    piped = llbkit(
        tmp_path / "root", "build", "--progress", "quiet", "-o", "type=tar", stdin=simple()
    )
    assert piped.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(piped.stdout)) as archive:
        assert "hello" in archive.getnames()


def test_a_failed_push_fails_its_export_step_as_buildkit_shows_it(tmp_path: Path) -> None:
    done = llbkit(
        tmp_path / "root",
        "build",
        "--progress",
        "plain",
        "-o",
        "type=image,name=127.0.0.1:1/x:y,push=true",
        stdin=simple(),
    )
    err = done.stderr.decode()
    assert done.returncode == 1
    step = err[err.index("exporting to image") :]
    # The push shows inside the export's step, which ends with the push's failure.
    assert "DONE" not in step
    assert re.search(r"#\d+ pushing layers\n#\d+ ERROR: failed to push 127.0.0.1:1/x:y: ", step)
    assert step.endswith(
        "------\n > exporting to image:\n------\n"
        "error: failed to solve: exporting to image: failed to push 127.0.0.1:1/x:y: "
        "cannot reach 127.0.0.1:1: connection refused\n"
    )


def test_a_step_whose_input_failed_is_not_shown_failed(tmp_path: Path) -> None:
    """As BuildKit shows it: the step that failed, not the steps waiting on it."""
    failing = llb.scratch().file(llb.mkfile("/missing/dir/f", 0o644, b""))
    data = definition(failing.file(llb.mkfile("/after", 0o644, b"")))
    done = llbkit(tmp_path / "root", "build", "--progress", "plain", stdin=data)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "ERROR: mkfile /missing/dir/f: parent directory does not exist" in err
    assert "mkfile /after" not in err, err


def test_failed_build_reports_the_vertex(tmp_path: Path) -> None:
    data = definition(llb.scratch().file(llb.mkfile("/missing/dir/f", 0o644, b"")))
    done = llbkit(tmp_path / "root", "build", "--progress", "plain", stdin=data)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "#1 ERROR: mkfile /missing/dir/f: parent directory does not exist" in err
    assert err.splitlines()[-1] == (
        "error: failed to solve: mkfile /missing/dir/f: mkfile /missing/dir/f: parent "
        "directory does not exist"
    )


def test_du_and_prune(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert llbkit(root, "build", "--progress", "quiet", stdin=simple()).returncode == 0
    table = llbkit(root, "du").stdout.decode().splitlines()
    assert table[0].split() == ["ID", "RECLAIMABLE", "SIZE", "LAST", "ACCESSED"]
    assert len(table) == 1 + 2 + 2  # header, two layers, Reclaimable and Total
    assert table[-1].startswith("Total:")
    verbose = llbkit(root, "du", "-v").stdout.decode()
    assert "Description:\tmkfile /hello\n" in verbose.replace("\t\t", "\t")
    filtered = llbkit(root, "du", "--filter", "description~=hello").stdout.decode()
    assert len(filtered.splitlines()) == 2 and "Total" not in filtered
    pruned = llbkit(root, "prune").stdout.decode().splitlines()
    assert len(pruned) == 1 + 2 + 1
    after = llbkit(root, "du").stdout.decode().splitlines()
    assert after[-1].split() == ["Total:", "0B"]
    rebuilt = llbkit(root, "build", "--progress", "plain", stdin=simple()).stderr.decode()
    assert "CACHED" not in rebuilt


def test_bad_filter_and_config(tmp_path: Path) -> None:
    done = llbkit(tmp_path / "root", "du", "--filter", "colour==red")
    assert done.returncode == 1 and "invalid filter 'colour==red'" in done.stderr.decode()
    config = tmp_path / "buildkitd.toml"
    config.write_text("[worker.oci]\ngc = true\ngcpolicy = [{keepBytes = 1, colour = 2}]\n")
    done = llbkit(tmp_path / "root", "--config", str(config), "du")
    assert done.returncode == 1
    assert "unknown key worker.oci.gcpolicy[0].colour" in done.stderr.decode()


def test_gc_policy_from_config_runs_after_a_build(tmp_path: Path) -> None:
    config = tmp_path / "buildkitd.toml"
    config.write_text("[worker.oci]\n[[worker.oci.gcpolicy]]\nall = true\nkeepBytes = 1\n")
    root = tmp_path / "root"
    done = llbkit(root, "--config", str(config), "build", "--progress", "quiet", stdin=simple())
    assert done.returncode == 0, done.stderr
    assert llbkit(root, "du").stdout.decode().splitlines()[-1].split() == ["Total:", "0B"]


class _SlowServer:
    """An HTTP server on loopback whose one file arrives only when the test says so."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.release = threading.Event()
        self.asked = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.asked.set()
                server.release.wait(30)
                body = b"slow content\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/slow.txt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()


def test_a_busy_root_is_waited_for_and_du_reads_it_meanwhile(tmp_path: Path) -> None:
    root = tmp_path / "root"
    server = _SlowServer()
    slow = definition(llb.scratch().file(llb.copy(llb.http(server.url), "/slow.txt", "/got")))
    try:
        first = subprocess.Popen(
            [*LLBKIT, "--root", str(root), "build", "--progress", "plain"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert first.stdin is not None
        first.stdin.write(slow)
        first.stdin.close()
        assert server.asked.wait(30), "the first build never asked for its file"
        # The owner is mid-build: du answers at once, from a read-only view.
        du = llbkit(root, "du")
        assert du.returncode == 0, du.stderr
        assert b"Total:" in du.stdout
        second = subprocess.Popen(
            [*LLBKIT, "--root", str(root), "build", "--progress", "plain"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert second.stdin is not None and second.stderr is not None
        second.stdin.write(simple())
        second.stdin.close()
        line = second.stderr.readline().decode()
        assert line == f"waiting for state root {root} (in use by pid {first.pid})...\n"
        time.sleep(1)  # a build of one mkfile ends well within this, unless it waits
        assert second.poll() is None
        server.release.set()
        assert first.wait(30) == 0, first.stderr.read() if first.stderr else b""
        rest = second.stderr.read().decode()
        assert second.wait(30) == 0, rest
        assert "#2 mkfile /hello" in rest
    finally:
        server.close()
        for proc in ("first", "second"):
            found = locals().get(proc)
            if found is not None and found.poll() is None:
                found.kill()


def test_tar_to_a_terminal_is_refused(tmp_path: Path) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [
                *LLBKIT,
                "--root",
                str(tmp_path / "root"),
                "build",
                "--progress",
                "quiet",
                "-o",
                "type=tar,dest=-",
            ],
            input=simple(),
            stdout=follower,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 1
    assert "refusing to write an archive to a terminal" in done.stderr.decode()


def test_tty_progress_is_a_live_view(tmp_path: Path) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [*LLBKIT, "--root", str(tmp_path / "root"), "build", "--progress", "auto"],
            input=simple(),
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "COLUMNS": "100"},
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert done.returncode == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "[+] Building" in screen and "(2/2) FINISHED" in screen
    assert "=> mkfile /hello" in screen


@pytest.mark.root
@pytest.mark.services
def test_exec_with_a_secret_and_host_network(tmp_path: Path) -> None:
    import shutil

    for tool in ("docker-registry", "runc", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, push_image

    with LocalRegistry(tmp_path / "registry") as registry:
        push_image(registry.host, "library/busybox:latest", [busybox_layer()])
        step = llb.image(f"{registry.host}/library/busybox").run(
            shell="cat /run/secrets/tok > /out/secret-length-is-$(wc -c < /run/secrets/tok)",
            network="host",
            mounts=[llb.Secret("tok", dest="/run/secrets/tok"), llb.Bind("/out", llb.scratch())],
        )
        data = definition(step.get_mount("/out"))
        env = {**os.environ, "TOKEN": "abcdef"}
        args = [
            *LLBKIT,
            "--root",
            str(tmp_path / "root"),
            "build",
            "--progress",
            "plain",
            "--secret",
            "id=tok,env=TOKEN",
            "-o",
            f"type=local,dest={tmp_path / 'out'}",
        ]
        refused = subprocess.run(args, input=data, capture_output=True, env=env)
        assert refused.returncode == 1
        # As BuildKit refuses it: while loading the LLB, before any step runs.
        assert refused.stderr.decode().endswith(
            "error: failed to solve: failed to load LLB: network.host is not allowed\n"
        )
        assert b"#1" not in refused.stderr
        ungranted = subprocess.run(
            [*args, "--allow", "network.host"], input=data, capture_output=True, env=env
        )
        assert ungranted.returncode == 1
        assert ungranted.stderr.decode().endswith(
            "error: failed to solve: granting entitlement network.host is not allowed by build "
            "daemon configuration (list it in insecure-entitlements of the engine's config)\n"
        )
        config = tmp_path / "buildkitd.toml"
        config.write_text('insecure-entitlements = ["network.host"]\n')
        done = subprocess.run(
            [*args, "--allow", "network.host", "--config", str(config)],
            input=data,
            capture_output=True,
            env=env,
        )
        assert done.returncode == 0, done.stderr.decode()
    assert os.listdir(tmp_path / "out") == ["secret-length-is-6"]
    workers = llbkit(tmp_path / "root", "debug", "workers").stdout.decode().splitlines()
    assert workers[0].split() == ["ID", "PLATFORMS"] and workers[1].endswith("linux/amd64")


@pytest.mark.root
def test_the_live_view_shows_a_failed_steps_log_once(tmp_path: Path, busybox_image: str) -> None:
    state = llb.image(busybox_image).run(shell="echo marker-line; exit 3").root()
    env = {**os.environ, "BUILDKIT_PROGRESS": "tty"}  # --progress auto then picks the live view
    done = subprocess.run(
        [*LLBKIT, "--root", str(tmp_path / "root"), "build", "--progress", "auto"],
        input=definition(state),
        capture_output=True,
        env=env,
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "exit code: 3" in err
    assert err.count(" > ") == 1, err


def test_an_image_shows_its_resolve_on_every_build(tmp_path: Path, busybox_image: str) -> None:
    # buildctl v0.11.6 shows "#4 resolve REF done" under a FROM step, rebuilt or not.
    data = definition(llb.image(busybox_image))
    ref = re.escape(f"{busybox_image}:latest")
    for _ in range(2):
        done = llbkit(tmp_path / "root", "build", "--progress", "plain", stdin=data)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.decode().splitlines()
        assert lines[0] == f"#1 docker-image://{busybox_image}:latest"
        assert lines[1].startswith(f"#1 resolve {busybox_image}:latest")
        assert any(re.fullmatch(rf"#1 resolve {ref}( \d+\.\ds)? done", line) for line in lines)


def test_exports_are_named_as_buildkit_names_them(tmp_path: Path) -> None:
    done = llbkit(
        tmp_path / "root",
        "build",
        "--progress",
        "plain",
        "--output",
        f"type=local,dest={tmp_path / 'out'}",
        "--output",
        f"type=oci,dest={tmp_path / 'image.tar'}",
        "--metadata-file",
        str(tmp_path / "meta.json"),
        stdin=simple(),
    )
    assert done.returncode == 0, done.stderr
    text = done.stderr.decode()
    # A sub-task shows as begun only when still running at the next print (BuildKit prints
    # every 100 ms), then as done with its time when over 10 ms.
    took = r"( \d+\.\ds)? done"
    assert re.search(r"^#(\d+) exporting to client directory\n#\1 copying files", text, re.M)
    assert re.search(rf"^#\d+ copying files.*{took}$", text, re.M)
    assert re.search(r"^#(\d+) exporting to oci image format\n#\1 exporting layers", text, re.M)
    assert re.search(rf"^#\d+ exporting layers{took}$", text, re.M)
    assert re.search(r"^#\d+ exporting manifest sha256:[0-9a-f]{64} done$", text, re.M)
    assert re.search(rf"^#\d+ sending tarball{took}$", text, re.M)
    keys = list(json.loads((tmp_path / "meta.json").read_text()))
    assert keys == sorted(keys)  # as buildctl writes Go maps: sorted


def test_a_frontend_warning_shows_under_a_named_step(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    ctx = str(tmp_path / "ctx")
    done = llbkit(
        tmp_path / "root",
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={ctx}",
        "--local",
        f"dockerfile={ctx}",
        "--opt",
        "build-arg:UNUSED=1",
    )
    assert done.returncode == 0, done.stderr.decode()
    assert re.search(
        r"^#(\d+) \[internal\] frontend dockerfile.v0\n"
        r"#\1 WARN: One or more build-args \[UNUSED\] were not consumed\n#\1 DONE ",
        done.stderr.decode(),
        re.M,
    )


@pytest.mark.root
def test_a_process_runc_cannot_start_shows_runcs_error_as_buildkit_does(
    tmp_path: Path, busybox_image: str
) -> None:
    """runc's own log goes to a file, as BuildKit runs it: the step's log holds runc's error
    as buildctl shows it from BuildKit, not a ``time=… level=error msg=…`` record."""
    state = llb.image(busybox_image).run(args=["/nonexistent"]).root()
    done = llbkit(tmp_path / "root", "build", "--progress", "plain", stdin=definition(state))
    assert done.returncode == 1
    err = done.stderr.decode()
    said = 'runc run failed: unable to start container process: exec: "/nonexistent": stat'
    assert said in err and "level=error" not in err, err
