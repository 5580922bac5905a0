"""The LLB graphs the engine is measured on (the same shapes BuildKit's figures come from)."""

from __future__ import annotations

from llbkit.sdk import llb


def wide(n: int) -> llb.State:
    """``n`` independent mkfile ops on scratch, merged together."""
    parts = [
        llb.scratch().file(llb.mkfile(f"/file-{i:04d}", 0o644, f"{i}\n".encode())) for i in range(n)
    ]
    return llb.merge(parts)


def chain(n: int) -> llb.State:
    """``n`` file ops, each on the result of the one before."""
    state = llb.scratch()
    for i in range(n):
        state = state.file(llb.mkfile(f"/file-{i:04d}", 0o644, f"{i}\n".encode()))
    return state


GRAPHS = {"wide": wide, "chain": chain}


def exec_chain(n: int, image: str) -> llb.State:
    """``n`` exec steps on ``image``, each on the result of the one before."""
    state = llb.image(image)
    for i in range(n):
        state = state.run(shell=f"echo step {i} >> /steps.log").root()
    return state
