"""What a failing cache says: one line, and never a credential the user gave."""

from __future__ import annotations

import pytest

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


def test_url_secrets_and_environment_credentials_are_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", "eyJhbGciOi.payload.sig")
    attrs = {"account_url": "https://acct.blob.example/?sv=2024&sig=SIGNATURE99"}
    said = (
        "GET https://acct.blob.example/?sv=2024&sig=SIGNATURE99 failed; "
        "token eyJhbGciOi.payload.sig refused"
    )
    shown = _scrubbed(said, attrs)
    assert "SIGNATURE99" not in shown and "eyJhbGciOi" not in shown
    assert "acct.blob.example" in shown
