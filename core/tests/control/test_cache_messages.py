"""What a failing cache says: one line, and never a credential the user gave."""

from __future__ import annotations

from llbkit.core.control.build import _scrubbed


def test_credentials_given_as_attributes_never_reach_a_message() -> None:
    attrs = {
        "bucket": "team-cache",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG",
        "session_token": "FwoGZXIvYXdzEJr",
        "token": "ghs_0123456789",
    }
    said = (
        "PUT https://s3.example/team-cache?X-Amz-Credential=wJalrXUtnFEMI/K7MDENG: "
        "denied for ghs_0123456789 (session FwoGZXIvYXdzEJr)"
    )
    shown = _scrubbed(said, attrs)
    for secret in ("wJalrXUtnFEMI/K7MDENG", "ghs_0123456789", "FwoGZXIvYXdzEJr"):
        assert secret not in shown
    assert "team-cache" in shown  # what is not a credential stays, to say which cache
