#!/usr/bin/env bash
# Build llbkitd's image (deploy/image/Dockerfile) with llbkit itself, from this repository.
#
#   deploy/image/build.sh [--local-base] [llbkit build flags...]
#   deploy/image/build.sh --output type=image,name=registry.example.com/llbkit/llbkitd:0.1.0,push=true
#   deploy/image/build.sh --local-base --output type=docker,dest=llbkitd.tar,name=llbkit/llbkitd:dev
#
# --local-base: instead of pulling debian:bookworm-slim, make the same Debian 12 base with
# debootstrap (from the machine's Debian mirror; needs root and the debootstrap package) and
# hand it to the build as the named context "base". The build's RUN steps still need the
# network: Debian's packages, and PyPI for the dependencies uv.lock pins.
# CA_BUNDLE (default: $SSL_CERT_FILE, else $PIP_CERT) is passed as the secret "cacert", for
# networks whose HTTPS goes through an intercepting proxy.
# LLBKIT names the llbkit to build with (default: the workspace's .venv/bin/llbkit, else
# llbkit on PATH); LLBKIT_ROOT or --root as for any build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
if [ -z "${LLBKIT:-}" ]; then
    if [ -x .venv/bin/llbkit ]; then LLBKIT=.venv/bin/llbkit; else LLBKIT=llbkit; fi
fi
args=(build --frontend dockerfile.v0 --local context=. --local dockerfile=deploy/image)
ca=${CA_BUNDLE:-${SSL_CERT_FILE:-${PIP_CERT:-}}}
if [ -n "$ca" ]; then args+=(--secret "id=cacert,src=$ca"); fi
if [ "${1:-}" = "--local-base" ]; then
    shift
    mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "build: debootstrap bookworm from $mirror" >&2
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    digest=$(python3 deploy/image/rootfs_layout.py "$work/rootfs" "$work/base")
    echo "build: base image $digest" >&2
    args+=(--oci-layout "base=$work/base" --opt "context:base=oci-layout://base@$digest"
           --opt build-arg:BASE=base)
fi
"$LLBKIT" "${args[@]}" "$@"
