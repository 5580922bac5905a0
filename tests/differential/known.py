"""Cases where llbkit still differs from BuildKit v0.11.6, each with the difference named. The
replay marks them xfail (strict: a case that starts passing must leave this list)."""

from __future__ import annotations

KNOWN: dict[str, str] = {}
