#!/usr/bin/env python3
"""Pick one daemon for a build by consistent hashing, so that the same project always lands on
the same llbkitd (and its warm cache) while the set of daemons changes as little as possible
for everyone else: rendezvous hashing, each key taking the endpoint with the highest
sha256(key, endpoint). Adding or removing a daemon moves only the keys that go to or came from
it. (BuildKit's examples/kubernetes/consistenthash does this with a hash ring.)

    export BUILDKIT_HOST=$(deploy/kubernetes/pick-daemon.py "$KEY" ENDPOINT...)
    kubectl get pods -l app.kubernetes.io/name=llbkitd -o name \\
        | deploy/kubernetes/pick-daemon.py --template 'tcp://{}.llbkitd.build.svc:1234' "$KEY"

KEY names what should share a cache, e.g. ``git@example.com:team/app.git:services/api``.
ENDPOINTs are addresses; without them they are read from standard input, one a line, and
``--template`` makes each into an address (``{}``: the line, less a ``pod/`` prefix).
"""

from __future__ import annotations

import hashlib
import sys


def pick(key: str, endpoints: list[str]) -> str:
    """The endpoint ``key`` goes to."""
    if not endpoints:
        raise ValueError("no endpoints to pick from")
    return max(endpoints, key=lambda e: hashlib.sha256(f"{key}\0{e}".encode()).digest())


def main(argv: list[str]) -> int:
    template = "{}"
    if len(argv) >= 2 and argv[0] == "--template":
        template, argv = argv[1], argv[2:]
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__, file=sys.stderr)
        return 2
    key, given = argv[0], argv[1:]
    lines = given or [line.strip() for line in sys.stdin if line.strip()]
    endpoints = sorted({template.format(line.removeprefix("pod/")) for line in lines})
    if not endpoints:
        print(
            "pick-daemon: error: no endpoints (none given, none on standard input)", file=sys.stderr
        )
        return 1
    print(pick(key, endpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
