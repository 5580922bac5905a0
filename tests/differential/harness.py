"""What a differential case is and how its result is compared: the same code reads BuildKit's
output when recording and llbkit's when replaying, so both sides are measured alike."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONTEXT = HERE / "context"
VECTORS = HERE / "vectors"
BUILDKIT_VERSION = "v0.11.6"
#: the image references a case names, replaced by the registry's when built
IMAGES = {
    "@BASE@": "library/busybox",
    "@RICH@": "library/rich",
    "@NOPATH@": "library/nopath",
    "@MULTI@": "library/multi",
    "@NOAMD@": "library/noamd",
    "@ARMONLY@": "library/armonly",
}
CATEGORIES = (
    "parser",
    "expansion",
    "instructions",
    "config",
    "history",
    "copy",
    "stages",
    "heredoc",
    "errors",
    "inputs",
    "options",
    "platforms",
    "contexts",
    "remote",
)


@dataclass
class Case:
    """A Dockerfile, the files it adds to the shared context, its build args and target."""

    name: str
    category: str
    dockerfile: str
    files: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    #: the frontend's ``filename`` option (unset: BuildKit's default, ``Dockerfile``)
    filename: str = ""
    #: other frontend options (``--opt key=value``)
    options: dict[str, str] = field(default_factory=dict)
    #: where the Dockerfile is written in its folder (unset: ``Dockerfile``)
    dockerfile_at: str = ""
    #: more files in the Dockerfile's folder, such as an ignore file beside it
    dockerfile_files: dict[str, str] = field(default_factory=dict)
    #: symlinks in the Dockerfile's folder: path -> target
    dockerfile_links: dict[str, str] = field(default_factory=dict)
    #: the context and the Dockerfile in one folder (``--local context=. --local dockerfile=.``)
    one_folder: bool = False
    #: more local directories the client shares (``--local NAME=…``): their files by name
    locals: dict[str, dict[str, str]] = field(default_factory=dict)
    #: OCI layouts the client shares (``--oci-layout NAME=…``): the image (a mark of IMAGES)
    #: each holds, copied from the registry
    layouts: dict[str, str] = field(default_factory=dict)
    #: definitions the client passes by name (BuildKit's frontend inputs): a recipe of
    #: :data:`INPUTS` each
    inputs: dict[str, str] = field(default_factory=dict)
    #: entitlements the build is given (buildctl's ``--allow``; the daemon grants them all)
    allow: list[str] = field(default_factory=list)
    #: secrets the client gives (buildctl's ``--secret id=ID,src=FILE``): their content by id
    secrets: dict[str, str] = field(default_factory=dict)
    #: archives written into the context: path -> a recipe of
    #: :data:`tests.differential.archives.RECIPES`
    archives: dict[str, str] = field(default_factory=dict)
    #: SSH agents the client forwards (buildctl's ``--ssh ID=SOCKET``), by id: each a socket
    #: the harness listens on (:func:`agent_sockets`)
    ssh: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        found = asdict(self)
        return {k: v for k, v in found.items() if v not in ({}, [], "", False)}

    @classmethod
    def load(cls, data: dict[str, Any]) -> Case:
        keys = (
            "name",
            "category",
            "dockerfile",
            "files",
            "args",
            "target",
            "filename",
            "options",
            "dockerfile_at",
            "dockerfile_files",
            "dockerfile_links",
            "one_folder",
            "locals",
            "layouts",
            "inputs",
            "allow",
            "secrets",
            "ssh",
            "archives",
        )
        return cls(**{k: data[k] for k in keys if k in data})


def materialize(case: Case, where: Path, registry: str) -> tuple[Path, Path]:
    """The case's context and Dockerfile directories under ``where``, with fixed modes (a
    checkout's follow its umask)."""
    ctx = where / "context"
    dfdir = ctx if case.one_folder else where / "dockerfile"
    shutil.copytree(CONTEXT, ctx, symlinks=True)
    dfdir.mkdir(exist_ok=True)
    written = {case.dockerfile_at or "Dockerfile": substitute(case.dockerfile, registry)}
    for folder, files in ((ctx, case.files), (dfdir, {**written, **case.dockerfile_files})):
        for name, body in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    if case.archives:
        from tests.differential.archives import RECIPES

        for name, recipe in case.archives.items():
            (ctx / name).write_bytes(RECIPES[recipe]())
    for name, target in case.dockerfile_links.items():
        (dfdir / name).parent.mkdir(parents=True, exist_ok=True)
        (dfdir / name).symlink_to(target)
    for top, _dirs, files in [*os.walk(ctx), *([] if case.one_folder else os.walk(dfdir))]:
        os.chmod(top, 0o755)
        for name in files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, 0o755 if executable else 0o644)
    return ctx, dfdir


def shared_dirs(case: Case, where: Path, registry: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """The case's other local directories and OCI layouts, written under ``where``: what the
    client shares besides the context and the Dockerfile, by name."""
    found: dict[str, Path] = {}
    for name, files in case.locals.items():
        folder = where / "locals" / name
        folder.mkdir(parents=True)
        os.chmod(folder, 0o755)
        for path, body in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(body)
            os.chmod(folder / path, 0o644)
        for top, dirs, _files in os.walk(folder):
            for sub in dirs:
                os.chmod(os.path.join(top, sub), 0o755)
        found[name] = folder
    layouts = {}
    for name, mark in case.layouts.items():
        layouts[name] = where / "layouts" / name
        write_layout(registry, IMAGES[mark], layouts[name])
    return found, layouts


def input_definitions(case: Case, registry: str) -> dict[str, bytes]:
    """The case's frontend inputs, marshaled by llbkit's SDK (the bytes BuildKit's Go client
    would marshal for the same graphs)."""
    return {
        name: INPUTS[recipe](registry).marshal().to_bytes() for name, recipe in case.inputs.items()
    }


def _busybox_run(registry: str) -> Any:
    from llbkit.sdk import llb

    base = llb.image(f"{registry}/{IMAGES['@BASE@']}")
    return base.run(shell="echo built > /built").root()


def _files(registry: str) -> Any:
    from llbkit.sdk import llb

    made = llb.mkfile("/a.txt", 0o644, b"a\n").mkdir("/d", 0o755).mkfile("/d/b.txt", 0o600, b"b\n")
    return llb.scratch().file(made)


def _dockerfile(registry: str) -> Any:
    from llbkit.sdk import llb

    text = b"ARG BASE\nFROM $BASE\nCOPY . /ctx/\nRUN ls -a /ctx | sort > /listed\n"
    return llb.scratch().file(llb.mkfile("/Dockerfile", 0o644, text))


def _empty(registry: str) -> Any:
    from llbkit.sdk import llb

    return llb.scratch()


#: the graphs a case may pass as frontend inputs, by name
INPUTS = {"busybox-run": _busybox_run, "files": _files, "dockerfile": _dockerfile, "empty": _empty}


#: the recorded LLB of BuildKit's own frontend, by case (``record_differential.py --llb``)
LLB = VECTORS / "llb" / "llb.json"
#: the records of the cache BuildKit exports building each case (see test_cache_keys.py)
CACHE_KEYS = VECTORS / "cachekeys" / "records.json"


def llb_compared(case: Case, result: dict[str, Any]) -> bool:
    """The cases whose LLB is compared: those BuildKit builds whose inputs are the client's
    two directories alone (no named or remote context, no inputs, no symlinked Dockerfile),
    with options BuildKit's frontend takes."""
    return (
        "error" not in result
        and case.category not in ("contexts", "remote")
        and not any(k.startswith("context") for k in case.options)
        and not (case.locals or case.layouts or case.inputs or case.dockerfile_links)
        and case.name != "hand-options-unknown-key"
    )


def normalize_llb(data: bytes, registry: str) -> list[str]:
    """A definition's ops as sorted JSON, comparable between two frontends: each input named
    by its index alone (digests hold what follows), the client's session and a local
    source's random ``local.unique`` left out, the registry named REGISTRY and the harness's
    server ``@REMOTE@``."""
    from google.protobuf.json_format import MessageToDict

    from llbkit.core.llb import pb

    ops = []
    for raw in getattr(pb.Definition.FromString(data), "def"):
        op = MessageToDict(pb.Op.FromString(raw))
        for key in ("local.session", "local.unique"):
            op.get("source", {}).get("attrs", {}).pop(key, None)
        for put in op.get("inputs", []):
            put["digest"] = "-"
        text = json.dumps(op, sort_keys=True).replace(registry, "REGISTRY")
        if REMOTE["host"]:  # a URL on the harness's server, as the case writes it
            text = text.replace(REMOTE["host"], REMOTE_MARK)
        ops.append(text)
    return sorted(ops)


def load_llb() -> dict[str, list[list[str]]]:
    """Each recorded case's definitions (one per platform), normalized, sorted."""
    if not LLB.exists():
        return {}
    return {item["name"]: item["llb"] for item in json.loads(LLB.read_text())["cases"]}


def load_cache_keys() -> dict[str, dict[str, list[list[str]]]]:
    """Each recorded case's cache records, as BuildKit exported them (see CACHE_KEYS)."""
    if not CACHE_KEYS.exists():
        return {}
    return {i["name"]: i["records"] for i in json.loads(CACHE_KEYS.read_text())["cases"]}


#: what a registry may answer for a manifest
_MANIFESTS = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass
class _Pulled:
    """An image as the registry holds it under ``latest``: its top manifest or index, each
    image's platform (as the index names it; None for a lone manifest) and manifest, and
    every blob (configs, layers) by digest."""

    top: bytes
    images: list[tuple[dict[str, str] | None, bytes]]
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.top).hexdigest()


def _pull(registry: str, repo: str) -> _Pulled:
    import httpx

    with httpx.Client(timeout=30) as client:

        def get(kind: str, ref: str) -> bytes:
            answer = client.get(
                f"http://{registry}/v2/{repo}/{kind}/{ref}",
                headers={"Accept": ",".join(_MANIFESTS)},
            )
            answer.raise_for_status()
            return answer.content

        top = get("manifests", "latest")
        listed = json.loads(top).get("manifests", [])
        images: list[tuple[dict[str, str] | None, bytes]] = [
            (m.get("platform") or {}, get("manifests", m["digest"])) for m in listed
        ] or [(None, top)]
        blobs = {}
        for _, manifest in images:
            document = json.loads(manifest)
            for blob in [document["config"], *document["layers"]]:
                blobs[blob["digest"]] = get("blobs", blob["digest"])
    return _Pulled(top, images, blobs)


def image_configs(registry: str) -> dict[str, dict[str, Any]]:
    """Each image of :data:`IMAGES` as the registry holds it: the digest its tag names and
    its configs by platform (``linux/arm/v7``; "" for an image of one manifest), as
    ``scripts/df2llb.go`` answers BuildKit's frontend with."""
    found = {}
    for repo in IMAGES.values():
        pulled = _pull(registry, repo)
        configs = {}
        for platform, manifest in pulled.images:
            config = pulled.blobs[json.loads(manifest)["config"]["digest"]].decode()
            if platform is None:
                configs[""] = config
                continue
            variant = platform.get("variant", "")
            if platform.get("architecture") == "arm64" and variant == "v8":
                variant = ""  # containerd's normal form
            parts = (platform.get("os"), platform.get("architecture"), variant)
            configs["/".join(p for p in parts if p)] = config
        found[f"{registry}/{repo}"] = {"digest": pulled.digest, "configs": configs}
    return found


def write_layout(registry: str, repo: str, dest: Path) -> str:
    """An OCI layout at ``dest`` holding ``repo:latest`` as the registry has it (the same
    digests), every platform's image; the digest ``index.json`` names."""
    pulled = _pull(registry, repo)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in [pulled.top, *(m for _, m in pulled.images), *pulled.blobs.values()]:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    media = json.loads(pulled.top).get("mediaType", _MANIFESTS[1])
    entry = {"mediaType": media, "digest": pulled.digest, "size": len(pulled.top)}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return pulled.digest


def substitute(text: str, registry: str) -> str:
    for mark, repo in IMAGES.items():
        text = text.replace(mark, f"{registry}/{repo}")
    return text.replace(REMOTE_MARK, REMOTE["host"]) if REMOTE["host"] else text


#: what the remote-context cases name as ``@REMOTE@``: the loopback server of
#: :func:`serve_remote` while one runs
REMOTE_MARK = "@REMOTE@"
REMOTE = {"host": ""}
#: the repository's files (``remote/`` is the tree :func:`serve_remote` serves as a Git
#: repository and as archives): a Dockerfile at the top and one in ``sub``, files the top
#: one's ``.dockerignore`` names, another Dockerfile by another name, and one spelled
#: ``dockerfile`` alone in its folder
REMOTE_FILES = {
    "Dockerfile": "ARG BASE\nFROM $BASE\nCOPY . /src/\n"
    "RUN find /src -path /src/.git -prune -o -print | sort > /listed\n",
    ".dockerignore": "ignored.txt\n",
    "ignored.txt": "ignored\n",
    "a.txt": "a\n",
    "Other.Dockerfile": "ARG BASE\nFROM $BASE\nCOPY a.txt /other/\n",
    "sub/Dockerfile": "ARG BASE\nFROM $BASE\nCOPY . /sub/\n",
    "sub/b.txt": "b\n",
    "lower/dockerfile": "ARG BASE\nFROM $BASE\nCOPY . /lower/\n",
}


@contextlib.contextmanager
def serve_remote(where: Path) -> Iterator[str]:
    """A loopback HTTP server of what remote contexts fetch, its address as ``@REMOTE@``:
    ``repo.git`` (a bare repository over Git's dumb HTTP protocol: ``main``, tagged ``v1``
    one commit before, a ``.git``-less ``repo`` the same), ``ctx.tar.gz`` and ``ctx.tar``
    (the tree), ``Dockerfile`` (the top Dockerfile alone); anything else is a 404."""
    import http.server
    import subprocess
    import threading

    work, served = where / "work", where / "served"
    work.mkdir(parents=True)
    served.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(where),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
    }

    def git(*args: str, cwd: Path = work) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    for name, body in REMOTE_FILES.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(body)
    git("add", "-A")
    git("commit", "-qm", "one")
    git("tag", "v1")
    (work / "a.txt").write_text("a, second\n")
    git("commit", "-qam", "two")
    git("clone", "-q", "--bare", str(work), str(served / "repo.git"), cwd=where)
    git("update-server-info", cwd=served / "repo.git")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path in sorted(REMOTE_FILES):
            data = (work / path).read_bytes()
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 1577836800
            tar.addfile(info, io.BytesIO(data))
    # The same bytes every time (gzip's header has no time): an ADD of the URL compares them.
    (served / "ctx.tar").write_bytes(archive.getvalue())
    (served / "ctx.tar.gz").write_bytes(gzip.compress(archive.getvalue(), mtime=0))
    (served / "Dockerfile").write_text(REMOTE_FILES["Dockerfile"])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    REMOTE["host"] = f"127.0.0.1:{server.server_address[1]}"
    try:
        yield REMOTE["host"]
    finally:
        REMOTE["host"] = ""
        server.shutdown()
        server.server_close()


def opts(case: Case, registry: str) -> dict[str, str]:
    """The frontend options (buildctl's ``--opt``) of a case."""
    found = {f"build-arg:{k}": substitute(v, registry) for k, v in case.args.items()}
    if case.target:
        found["target"] = case.target
    if case.filename:
        found["filename"] = case.filename
    found.update(
        {substitute(k, registry): substitute(v, registry) for k, v in case.options.items()}
    )
    return found


def _layer_entries(tar: tarfile.TarFile) -> list[tuple[str, dict[str, Any] | None]]:
    """(path, entry) per member of a layer, entry ``None`` for a whiteout of path."""
    found: list[tuple[str, dict[str, Any] | None]] = []
    sizes: dict[str, tuple[int, str]] = {}
    for member in tar:
        name = member.name.lstrip("./").rstrip("/") if member.name not in (".", "./") else ""
        if not name:
            continue
        base = name.rsplit("/", 1)[-1]
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        if base == ".wh..wh..opq":
            found.append((parent + "/*", None))
            continue
        if base.startswith(".wh."):
            found.append(((parent + "/" if parent else "") + base[4:], None))
            continue
        entry: dict[str, Any] = {
            "mode": oct(member.mode & 0o7777),
            "uid": member.uid,
            "gid": member.gid,
        }
        if member.isdir():
            entry["type"] = "dir"
        elif member.issym():
            entry["type"] = "symlink"
            entry["target"] = member.linkname
        elif member.islnk():
            link = member.linkname.lstrip("./").rstrip("/")
            entry["type"] = "file"
            entry["hardlink"] = True
            entry["size"], entry["sha256"] = sizes.get(link, (0, ""))
        elif member.isreg():
            body = tar.extractfile(member)
            data = body.read() if body else b""
            entry["type"] = "file"
            entry["size"] = len(data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
            sizes[name] = (entry["size"], entry["sha256"])
        else:
            entry["type"] = "other"
        if member.mtime < 1_609_459_200 and not member.isdir():
            entry["mtime"] = int(member.mtime)
        found.append((name, entry))
    return found


def apply_layers(layers: list[bytes]) -> dict[str, dict[str, Any]]:
    """The tree the layers make, bottom first, whiteouts applied."""
    tree: dict[str, dict[str, Any]] = {}
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            entries = _layer_entries(tar)
        for name, entry in entries:
            if entry is None:
                prefix = name[:-1] if name.endswith("/*") else name + "/"
                for key in [k for k in tree if k.startswith(prefix)]:
                    del tree[key]
                if not name.endswith("/*"):
                    tree.pop(name, None)
                continue
            if entry["type"] != "dir" or tree.get(name, {}).get("type") != "dir":
                for key in [k for k in tree if k.startswith(name + "/")]:
                    del tree[key]
            tree[name] = entry
    return tree


def busybox_tree() -> dict[str, dict[str, Any]]:
    from llbkit.sdk.testing.registry import busybox_layer

    return apply_layers([busybox_layer()])


def changed(tree: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Entries that are not the base image's as they are, and base paths that are gone; the
    whole tree when it is not built on the base (no base busybox binary in it)."""
    if tree.get("bin/busybox") != base.get("bin/busybox"):
        return dict(sorted(tree.items()))
    found: dict[str, Any] = {k: v for k, v in tree.items() if base.get(k) != v}
    for key in base:
        if key not in tree:
            found[key] = {"type": "removed"}
    return dict(sorted(found.items()))


def read_oci(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The config and layers (bottom first) of a single-image OCI tarball."""
    return read_oci_images(data)[""]


def read_oci_images(data: bytes) -> dict[str, tuple[dict[str, Any], list[bytes]]]:
    """The config and layers (bottom first) of each image of an OCI tarball: ``""``'s for a
    single image, else by platform (``linux/arm64``) for an index of several."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:

        def blob(digest: str) -> bytes:
            member = tar.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert member is not None
            return member.read()

        def image(digest: str) -> tuple[dict[str, Any], list[bytes]]:
            manifest = json.loads(blob(digest))
            config = json.loads(blob(manifest["config"]["digest"]))
            return config, [blob(layer["digest"]) for layer in manifest.get("layers") or []]

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        top = index["manifests"][0]
        if "index" not in top.get("mediaType", ""):
            return {"": image(top["digest"])}
        found = {}
        for entry in json.loads(blob(top["digest"]))["manifests"]:
            platform = entry.get("platform") or {}
            key = "/".join(
                platform[k] for k in ("os", "architecture", "variant") if platform.get(k)
            )
            found[key] = image(entry["digest"])
        return found


def result_of(oci: bytes, base: dict[str, dict[str, Any]], registry: str) -> dict[str, Any]:
    """What a successful build is compared on: changed tree, whole config, history (of each
    platform's image, for a build of several)."""
    images = read_oci_images(oci)
    if list(images) != [""]:
        return {"platforms": {k: _image_result(*v, base, registry) for k, v in images.items()}}
    return _image_result(*images[""], base, registry)


def _image_result(
    config: dict[str, Any], layers: list[bytes], base: dict[str, dict[str, Any]], registry: str
) -> dict[str, Any]:
    tree = changed(apply_layers(layers), base)
    history = [
        {k: v for k, v in h.items() if k != "created"} for h in config.pop("history", None) or []
    ]
    # BuildKit v0.11's build info (deprecated there, gone later): llbkit writes none.
    for key in ("created", "rootfs", "moby.buildkit.buildinfo.v1"):
        config.pop(key, None)
    found = {"tree": tree, "image": config, "history": history}
    text = json.dumps(found).replace(registry, "REGISTRY")
    if REMOTE["host"]:  # an ADD of a URL names it in its history
        text = text.replace(REMOTE["host"], "REMOTE")
    return json.loads(text)


def error_cause(text: str, registry: str) -> str:
    """The part of an error that names its cause, without BuildKit's wrapping and ref ids."""
    text = text.replace(registry, "REGISTRY").strip()
    if REMOTE["host"]:
        text = text.replace(REMOTE["host"], "REMOTE")
    text = re.sub(r"^(error: )?failed to solve: ", "", text)
    text = re.sub(
        r"failed to compute cache key: failed to calculate checksum of ref \S+ ", "", text
    )
    # A source whose folder is missing: BuildKit names the folder it could not walk.
    text = re.sub(r"failed to walk /tmp/buildkit-mount\d+/\S*: ", "", text)
    # The Dockerfile a build could not read, named as asked for, not in BuildKit's mount.
    text = re.sub(r"(open|read) /tmp/buildkit-mount\d+/", r"\1 ", text)
    text = re.sub(
        r"lstat /tmp/buildkit-mount\d+(/\S*): no such file or directory",
        r'"\1": not found',
        text,
    )
    # A path in a snapshot or a mount of one: BuildKit names its snapshotter's directory.
    text = re.sub(r"/\S*/cachemounts/buildkit\d+(/\S*)", r"\1", text)
    return re.sub(r"/\S*/snapshots/snapshots/\d+(/\S*)", r"\1", text)


def compare(expected: dict[str, Any], got: dict[str, Any] | str) -> list[str]:
    """What differs, one line per aspect (empty when the same)."""
    if "error" in expected:
        if not isinstance(got, str):
            return [f"BuildKit failed ({expected['error']}); llbkit built it"]
        if expected["error"] not in got:
            return [f"error text: BuildKit {expected['error']!r}, llbkit {got!r}"]
        return []
    if isinstance(got, str):
        return [f"llbkit failed: {got}"]
    if "platforms" in expected or "platforms" in got:
        want, have = expected.get("platforms", {}), got.get("platforms", {})
        if sorted(want) != sorted(have):
            return [f"platforms: BuildKit {sorted(want)} vs llbkit {sorted(have)}"]
        return [f"{key}: {line}" for key in want for line in compare(want[key], have[key])]
    problems = []
    for key in ("tree", "image", "history"):
        if expected[key] == got[key]:
            continue
        name = key
        if key == "history" and _undescribed(expected[key]) == _undescribed(got[key]):
            name = "exporter history"  # only the entries the exporter adds for bare layers
        problems.append(f"{name}: BuildKit {_short(expected[key], got[key])}")
    return problems


def _undescribed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in h.items() if k != "created_by"}
        if h.get("comment") == "buildkit.exporter.image.v0"
        else h
        for h in history
    ]


def _short(want: Any, have: Any) -> str:
    if isinstance(want, dict) and isinstance(have, dict):
        keys = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        return "; ".join(
            f"{k}: {json.dumps(want.get(k))} vs llbkit {json.dumps(have.get(k))}" for k in keys
        )[:1500]
    return f"{json.dumps(want)[:700]} vs llbkit {json.dumps(have)[:700]}"


def load_vectors() -> list[tuple[Case, dict[str, Any]]]:
    found = []
    for path in sorted(VECTORS.glob("*.json")):
        for item in json.loads(path.read_text())["cases"]:
            found.append((Case.load(item), item["result"]))
    return found


def push_images(registry: str) -> None:
    """The images the cases name: busybox, the rich base, busybox whose config has no PATH,
    and the images of several platforms (:func:`push_platform_images`)."""
    from llbkit.sdk.testing.registry import busybox_layer, push_image, push_rich_base

    push_image(registry, "library/busybox:latest", [busybox_layer()])
    push_rich_base(registry)
    push_image(registry, "library/nopath:latest", [busybox_layer()], {"config": {"Cmd": ["sh"]}})
    push_platform_images(registry)


#: the platforms of ``library/multi`` (``library/noamd``: all but the first)
PLATFORMS = (
    {"os": "linux", "architecture": "amd64"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
)


def push_platform_images(registry: str) -> None:
    """Images whose platform a build shows: each platform's image is busybox (this machine's
    binary, so that a RUN works whatever the platform says, as it does where no emulator is
    installed) and a layer with ``/arch``, the platform's name; its config names it in
    ``IMAGE_PLATFORM``, and a history entry describes each layer. ``library/multi`` is an
    index of :data:`PLATFORMS`, ``library/noamd`` the same without amd64, and
    ``library/armonly`` the arm64 image alone (a manifest, no index)."""
    from llbkit.sdk.testing.registry import busybox_layer, layer_tar, push_image, push_index

    base = busybox_layer()

    def image(platform: dict[str, str]) -> tuple[list[bytes], dict[str, Any]]:
        key = "/".join(platform.values())
        layers = [base, layer_tar({"arch": f"{key}\n"})]
        config = {
            "config": {
                "Env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    f"IMAGE_PLATFORM={key}",
                ],
                "Cmd": ["/bin/sh"],
            },
            "history": [{"created_by": "busybox"}, {"created_by": f"arch {key}"}],
        }
        return layers, config

    every = [(p, *image(p)) for p in PLATFORMS]
    push_index(registry, "library/multi:latest", every)
    push_index(registry, "library/noamd:latest", every[1:])
    arm = PLATFORMS[1]
    layers, config = image(arm)
    push_image(
        registry,
        "library/armonly:latest",
        layers,
        {**config, "variant": arm["variant"]},
        platform=(arm["os"], arm["architecture"]),
    )


#: how a step of plain progress ends
_MARKERS = ("CACHED", "DONE", "ERROR", "CANCELED")
_HEADER = re.compile(r"^#(\d+) (.*)$")
#: a stage's step, its platform first in a build for several (``[linux/amd64 build 1/2]``)
_STAGE = re.compile(r"^\[((?:\S+/\S+ )?\S+) (\d+)/\d+\] ")
_METADATA = re.compile(r"^\[(\S+ )?internal\] load metadata for ")


def progress_steps(text: str, registry: str) -> list[list[str]]:
    """The steps of ``--progress=plain`` output in the order first shown, each with how it
    ended (``CACHED``, ``DONE``, ``ERROR``, ``CANCELED``; empty if it never did): names and
    markers only, no times, ids, sub-task or log lines."""
    names: dict[str, str] = {}
    ends: dict[str, str] = {}
    text = text.replace(registry, "REGISTRY")
    if REMOTE["host"]:
        text = text.replace(REMOTE["host"], "REMOTE")
    for line in text.splitlines():
        found = _HEADER.match(line)
        if found is None:
            continue
        number, rest = found.groups()
        if number == "0":
            continue  # no step's: BuildKit's git source logs its ls-remote so on a rebuild
        if number not in names:
            names[number] = rest
            continue
        if rest == names[number]:
            continue  # shown again after another step's lines
        word = rest.split(":", 1)[0].split(" ", 1)[0]
        if word in _MARKERS:
            ends[number] = word
    return [[name, ends.get(number, "")] for number, name in names.items()]


def progress_chains(steps: list[list[str]]) -> dict[str, list[list[str]]]:
    """Steps grouped so that what BuildKit's own order leaves open is not compared: each
    stage's steps (``[name k/M]``) by ``k`` (BuildKit shows a rebuild's cached steps as their
    cache loads finish, nearly always in that order but not always); ``[internal]`` steps,
    ``FROM`` steps (by image) and other steps without a stage (exports) as sorted sets, since
    BuildKit runs them in parallel. :func:`compare_progress` checks the order llbkit shows."""
    chains: dict[str, list[list[str]]] = {}
    for name, marker in steps:
        found = _STAGE.match(name)
        rest = name[found.end() :] if found else name
        if rest.startswith("FROM "):
            # Stages on the same image share its step, and BuildKit names it after either
            # stage (which one varies from build to build), an image a --from reads being a
            # stage without a number: compared by image alone.
            chains.setdefault("FROM", []).append([rest, marker])
            continue
        key = f"stage {found.group(1)}" if found else "internal" if name.startswith("[") else ""
        chains.setdefault(key, []).append([name, marker])
    for key, chain in chains.items():
        chain.sort(key=_position if key.startswith("stage ") else None)
    return chains


def _position(step: list[str]) -> int:
    found = _STAGE.match(step[0])
    return int(found.group(2)) if found else 0


def _out_of_order(steps: list[list[str]]) -> list[str]:
    """Steps shown before an earlier step of their stage."""
    last: dict[str, int] = {}
    found = []
    for name, _ in steps:
        stage = _STAGE.match(name)
        if stage is None or name[stage.end() :].startswith("FROM "):
            continue
        if int(stage.group(2)) < last.get(stage.group(1), 0):
            found.append(name)
        last[stage.group(1)] = max(last.get(stage.group(1), 0), int(stage.group(2)))
    return found


def compare_progress(expected: list[list[str]], got: list[list[str]]) -> list[str]:
    """What differs between two step lists (empty when the same after
    :func:`progress_chains`): a step missing or extra, a marker, an order within a stage."""
    want, have = progress_chains(expected), progress_chains(got)
    problems = []
    if _phases(expected) == sorted(_phases(expected)) and _phases(got) != sorted(_phases(got)):
        problems.append(f"order: BuildKit {_names(expected)} vs llbkit {_names(got)}")
    if _out_of_order(got):
        problems.append(f"llbkit shows {_out_of_order(got)} before earlier steps of its stage")
    for key in sorted(set(want) | set(have)):
        if want.get(key) != have.get(key):
            problems.append(
                f"{key or 'other steps'}: BuildKit {json.dumps(want.get(key))} "
                f"vs llbkit {json.dumps(have.get(key))}"
            )
    return problems


def _phases(steps: list[list[str]]) -> list[int]:
    """Where each step belongs in a build: the definition read, image metadata, the build's
    own steps, the export."""
    found = []
    for name, _ in steps:
        if name.startswith(("[internal] load build definition", "[internal] load .dockerignore")):
            found.append(0)
        elif _METADATA.match(name):
            found.append(1)
        elif name.startswith("exporting "):
            found.append(3)
        else:
            found.append(2)
    return found


def _names(steps: list[list[str]]) -> str:
    return json.dumps([name for name, _ in steps])


def progress_recorded(case: Case) -> bool:
    """The cases whose progress is compared: a Dockerfile of more than one stage (more than
    one ``FROM``, or an image that a ``--from`` reads, which BuildKit makes a stage of), a
    build for several platforms (each stage once per platform) or asked to be one
    (``multi-platform``), or a remote context (its own steps)."""
    if re.search(r"(?i)\bfrom=@", case.dockerfile) or "," in case.options.get("platform", ""):
        return True
    if "multi-platform" in case.options or "build-arg:BUILDKIT_MULTI_PLATFORM" in case.options:
        return True  # a result by platform, even for one: its steps are named after it
    if case.category == "remote":
        return True
    return len(re.findall(r"(?im)^\s*from\s", case.dockerfile)) > 1


PROGRESS = VECTORS / "progress" / "warm.json"


def load_progress() -> dict[str, list[list[str]]]:
    """BuildKit's warm-rebuild steps by case name (scripts/record_differential.py
    --progress)."""
    if not PROGRESS.exists():
        return {}
    return {item["name"]: item["steps"] for item in json.loads(PROGRESS.read_text())["cases"]}


@contextlib.contextmanager
def agent_sockets(case: Case) -> Iterator[dict[str, Path]]:
    """A listening socket for each SSH agent ``case`` forwards (in a short folder of its own:
    a socket's path is at most 107 bytes): what a step sees of an SSH mount (its socket,
    owner and mode) needs no agent behind it."""
    import socket
    import tempfile

    found: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        if case.ssh:
            where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agents-")))
        for n, sid in enumerate(case.ssh):
            path = where / f"agent-{n}.sock"
            sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            sock.bind(str(path))
            sock.listen()
            found[sid] = path
        yield found
