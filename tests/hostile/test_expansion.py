"""Word-expansion bombs: a few hundred bytes of Dockerfile cannot grow the build without bound
or exhaust the stack; each is refused in one line naming the instruction and its line."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import anyio
import pytest

from llbkit.plugins.frontend_dockerfile.convert import BuildOptions, convert
from llbkit.plugins.frontend_dockerfile.parser import DockerfileError, parse
from llbkit.plugins.frontend_dockerfile.shell import MAX_DEPTH, expand
from llbkit.sdk import llb
from tests.hostile.cli import LLBKIT, error_line

MEMORY = 1536 << 20  # the CLI's address space: a bomb fails inside it instead of on the host


async def _no_images(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
    raise AssertionError(f"no image to resolve here: {ref}")


def refusal(text: str) -> str:
    with pytest.raises(DockerfileError) as err:
        anyio.run(convert, parse(text), BuildOptions(), _no_images)
    message = str(err.value)
    assert "\n" not in message
    return message


def doubling(times: int, seed: str = "xxxxxxxx") -> str:
    lines = ["FROM scratch", f"ARG A0={seed}"]
    lines += [f"ARG A{i}=$A{i - 1}$A{i - 1}" for i in range(1, times + 1)]
    return "\n".join(lines) + "\n"


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def test_forty_doublings_are_refused_in_one_line_within_bounded_memory(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(doubling(40))
    local = ["--local", f"context={tmp_path}", "--local", f"dockerfile={tmp_path}"]
    done = subprocess.run(
        [*LLBKIT, "--root", str(tmp_path / "root"), "build", "--frontend", "dockerfile.v0", *local],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited,  # a plain rlimit, set before exec
    )
    line = error_line(done)
    assert "Dockerfile:19: ARG: a word expands to more than 1 MiB" in line


def test_deep_nesting_is_refused_before_the_stack_runs_out() -> None:
    word = "${A:-" * 2000 + "x" + "}" * 2000
    message = refusal(f"FROM scratch\nARG A={word}\n")
    assert message == "Dockerfile:2: ARG: variable substitutions nested 2000 deep (at most 64)"


def test_nesting_within_the_bound_still_expands() -> None:
    word = "${A:-" * MAX_DEPTH + "x" + "}" * MAX_DEPTH
    assert expand(word, {}) == "x"


def test_a_heredoc_is_bounded_too() -> None:
    text = doubling(14, "x" * 32) + "COPY <<EOF /f\n" + "$A14" * 4 + "\nEOF\n"  # 4 x 512 KiB
    assert "COPY: a word expands to more than 1 MiB" in refusal(text)


def test_reusing_large_values_is_bounded_by_the_whole_dockerfile() -> None:
    text = doubling(10, "x" * 1000)  # A10 is 1,024,000 bytes: under the bound of one word
    text += "".join(f"ARG B{i}=$A10\n" for i in range(40))
    assert "ARG: variable expansion made more than 32 MiB" in refusal(text)


def test_each_run_counts_its_environment() -> None:
    text = doubling(10, "x" * 1000) + "RUN true\n" * 40
    assert "RUN: variable expansion made more than 32 MiB" in refusal(text)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("${0\n", "missing ':' in substitution"),  # BuildKit's lexer's words
        ("${A?two\nlines}", "A: two\\nlines"),
    ],
)
def test_a_heredoc_expansion_error_is_one_line(body: str, message: str) -> None:
    """Found by the fuzzer: a heredoc's line breaks reached the message."""
    said = refusal(f"FROM scratch\nCOPY <<EOF /f\n{body}\nEOF\n")
    assert said.endswith(message) and "\n" not in said
