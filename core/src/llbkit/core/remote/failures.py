"""A failed Solve as both clients raise it, from what the daemon's trailers carry: llbkit's
typed detail (a step's log tail) and BuildKit's ``errdefs.Source`` (the Dockerfile lines).
Light: the client without grpcio reads it too, on its failure path only."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from llbkit.core.errors import UserError

__all__ = ["ERROR_DETAIL", "SOLVE_FAILED", "failed_solve", "unreachable"]

#: the trailer with llbkit's own detail of a failure (JSON)
ERROR_DETAIL = "llbkit-error-bin"
#: what a client says before a failed Solve's answer (buildctl, and llbkit's)
SOLVE_FAILED = "failed to solve: "


def failed_solve(
    message: str,
    address: str,
    *,
    code_name: str,
    status_details: bytes | None,
    error_detail: bytes | None,
) -> Exception:
    """The error for a Solve that ended with ``message`` (gRPC status ``code_name``)."""
    import json

    from llbkit.core.control.errdetails import status_source
    from llbkit.core.errors import BuildFailed, FrontendFailed, UserError

    # As buildctl shows a failed Solve: its answer after SOLVE_FAILED, and the source lines
    # from the typed detail buildctl reads them from.
    said = SOLVE_FAILED + message
    source = status_source(status_details) if status_details else ""
    if error_detail is not None:
        try:
            detail = json.loads(error_detail)
        except (ValueError, RecursionError):
            detail = {}
        kind = detail.get("kind") if isinstance(detail, dict) else None
        if kind == "build":
            raised = BuildFailed(
                detail.get("name", ""), detail.get("reason", ""), detail.get("log_tail", []), source
            )
            if str(raised) != said:
                raised.args = (said,)
            return raised
        if kind == "frontend":
            return FrontendFailed(said, source)
        return UserError(said)
    if source:  # a daemon that sends only BuildKit's typed detail (buildkitd itself)
        return FrontendFailed(said, source)
    if code_name == "unavailable":
        return unreachable(address, message)
    return UserError(message or code_name)


def unreachable(address: str, said: str) -> UserError:
    """A daemon that cannot be reached, in one line: where it was looked for, and the last
    words of why (gRPC's text names every attempt)."""
    from llbkit.core.errors import UserError

    reason = said.rsplit(": ", 1)[-1].strip() or "unavailable"
    return UserError(f"cannot reach the daemon at {address}: {reason} (is llbkitd running there?)")
