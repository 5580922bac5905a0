#!/usr/bin/env bash
# Installs what llbkit's development needs on a Debian machine (as root, or with the system
# packages already present), then the workspace into .venv with every distribution editable.
#   usage: scripts/setup.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v git >/dev/null || missing+=(git)
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
# The real parts the tests run: runc containers, a registry, a static busybox for base images,
# htpasswd for a registry with credentials, skopeo and docker.io (dockerd for `docker load`),
# containerd.
# Only as root; otherwise those tests skip.
if [ "$(id -u)" = 0 ]; then
    command -v runc >/dev/null || missing+=(runc)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
    command -v skopeo >/dev/null || missing+=(skopeo)
    command -v dockerd >/dev/null || missing+=(docker.io)
    # containerd (the containerd worker's tests start their own) and the API .proto files its
    # generated client is checked against
    command -v containerd >/dev/null || missing+=(containerd)
    [ -d /usr/share/gocode/src/github.com/containerd/containerd/api ] ||
        missing+=(golang-github-containerd-containerd-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The interpreter: $LLBKIT_PYTHON if set; else the system's own /usr/bin/python3 when it is 3.11
# or newer (Debian builds it with PGO and LTO: a warm build takes about a sixth less time than
# on an unoptimized build of the same version, as a version manager compiles it); else python3.
python=${LLBKIT_PYTHON:-}
if [ -z "$python" ]; then
    python=$(command -v python3)
    if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null &&
        /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
        python=/usr/bin/python3
    fi
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: llbkit needs Python 3.11 or newer; $python is $("$python" --version)" >&2
    exit 1
fi

# uv installs the workspace from uv.lock; it lives in its own venv so that syncing .venv
# never removes it.
if [ ! -x .tools/bin/uv ]; then
    "$python" -m venv .tools
    .tools/bin/pip install -q --disable-pip-version-check 'uv==0.13.9'
fi
.tools/bin/uv sync --all-packages --frozen --python "$python" -q

# Azurite, Azure Storage's emulator (a node package), for the azblob cache's tests; the version
# is llbkit.sdk.testing.azurite.VERSION. Only as root with node and npm; otherwise they skip.
if [ "$(id -u)" = 0 ] && command -v node >/dev/null && command -v npm >/dev/null &&
    [ ! -e .tools/azurite/node_modules/.bin/azurite-blob ]; then
    mkdir -p .tools/azurite
    npm install --no-audit --no-fund --silent --prefix .tools/azurite azurite@3.37.0 \
        >/dev/null 2>&1 || echo "setup: could not install Azurite; the azblob tests will skip" >&2
fi
echo "setup: ready (.venv/bin/llbkit $(.venv/bin/llbkit --version | cut -d' ' -f2))"
