"""The CLI's displays of a build's status batches, as BuildKit's printer shows them."""

from __future__ import annotations

import io
import json
import time

import pytest

from llbkit.core.cli.progress_ui import make_display, status_json, trace_json
from llbkit.core.plugins.progress import (
    SolveStatus,
    Vertex,
    VertexLog,
    VertexStatus,
    VertexWarning,
)

T = 1_800_000_000.0


def test_a_steps_output_is_shown_before_its_end_whatever_the_batch() -> None:
    out = io.StringIO()
    display = make_display("plain", out)
    # One batch holds the step's start, output, warning and end, in the order they happened.
    display(
        SolveStatus.of(
            [
                Vertex("sha256:a", "fail step", started=T),
                VertexLog("sha256:a", T + 0.05, 1, b"before-fail\n"),
                VertexWarning("sha256:a", T + 0.06, "careful"),
                Vertex("sha256:a", "fail step", started=T, completed=T + 0.1, error="boom"),
            ]
        )
    )
    display.close()
    assert out.getvalue().splitlines() == [
        "#1 fail step",
        "#1 0.050 before-fail",
        "#1 WARN: careful",
        "#1 ERROR: boom",
    ]


def test_a_line_is_stamped_when_it_began_and_an_unfinished_one_is_shown_at_the_end() -> None:
    """As BuildKit's printer: a line split over chunks keeps the time of its first bytes, and
    output that does not end in a newline is shown, stamped, when the step ends."""
    out = io.StringIO()
    display = make_display("plain", out)
    display(
        SolveStatus.of(
            [
                Vertex("sha256:a", "step", started=T),
                VertexLog("sha256:a", T + 0.01, 1, b"one\ntw"),
                VertexLog("sha256:a", T + 0.02, 1, b"o\nthr"),
                VertexLog("sha256:a", T + 0.03, 1, b"ee"),
                Vertex("sha256:a", "step", started=T, completed=T + 0.5),
            ]
        )
    )
    assert out.getvalue().splitlines() == [
        "#1 step",
        "#1 0.010 one",
        "#1 0.010 two",
        "#1 0.020 three",
        "#1 DONE 0.5s",
    ]


def test_trace_is_go_encoding_of_solve_status_as_buildctl_writes_it() -> None:
    status = SolveStatus(
        vertexes=(Vertex("sha256:a", "step", ("sha256:b",), started=T + 0.125),),
        logs=(VertexLog("sha256:a", T, 2, b"hi\n"),),
    )
    got = json.loads(trace_json(status))
    assert got == {
        "Vertexes": [
            {
                "Digest": "sha256:a",
                "Inputs": ["sha256:b"],
                "Name": "step",
                "Started": "2027-01-15T08:00:00.125Z",
                "Completed": None,
                "Cached": False,
                "Error": "",
                "ProgressGroup": None,
            }
        ],
        "Statuses": None,
        "Logs": [
            {"Vertex": "sha256:a", "Stream": 2, "Data": "aGkK", "Timestamp": "2027-01-15T08:00:00Z"}
        ],
        "Warnings": None,
    }
    # rawjson stays the compact form with BuildKit's later lowercase names.
    assert status_json(status)["logs"][0]["data"] == "aGkK"


def test_a_sub_task_shows_as_buildkits_printer_shows_it() -> None:
    """BuildKit prints at most every 100 ms: a sub-task that ends sooner shows only as done
    (with its time when over 10 ms); one still running 100 ms later shows as begun too."""
    out = io.StringIO()
    display = make_display("plain", out)
    display(
        SolveStatus.of(
            [
                Vertex("sha256:e", "exporting to image", started=T),
                VertexStatus("exporting layers", "sha256:e", T, started=T),
                VertexStatus(
                    "exporting layers", "sha256:e", T + 0.07, started=T, completed=T + 0.07
                ),
                VertexStatus("sending tarball", "sha256:e", T + 0.06, started=T + 0.06),
            ]
        )
    )
    display(
        SolveStatus.of(
            [
                VertexStatus("pushing", "sha256:e", T + 0.2, started=T + 0.2),
                VertexStatus(
                    "sending tarball", "sha256:e", T + 0.4, started=T + 0.06, completed=T + 0.4
                ),
                Vertex("sha256:e", "exporting to image", started=T, completed=T + 0.5),
            ]
        )
    )
    display.close()
    assert out.getvalue().splitlines() == [
        "#1 exporting to image",
        "#1 exporting layers 0.1s done",
        "#1 sending tarball",
        "#1 pushing",
        "#1 sending tarball 0.3s done",
        "#1 DONE 0.5s",
    ]


def test_a_step_reopened_after_it_ended_shows_again_and_ends_again_with_both_times() -> None:
    """A source found cached and then fetched for a later step is reopened: BuildKit's printer
    (when the two do not fall in one of its 100 ms batches) shows it ``CACHED``, then again
    with its downloads and a ``DONE`` that adds both times, not the wait between them."""
    out = io.StringIO()
    display = make_display("plain", out)
    display(SolveStatus.of([Vertex("sha256:f", "FROM img", started=T)]))
    display(SolveStatus.of([Vertex("sha256:f", "FROM img", started=T, completed=T, cached=True)]))
    display(
        SolveStatus.of(
            [
                Vertex("sha256:c", "load build context", started=T + 0.01),
                Vertex("sha256:c", "load build context", started=T + 0.01, completed=T + 0.02),
            ]
        )
    )
    display(
        SolveStatus.of(
            [
                Vertex("sha256:f", "FROM img", started=T + 1.0),
                VertexStatus(
                    "sha256:b",
                    "sha256:f",
                    T + 1.2,
                    current=5,
                    total=5,
                    started=T + 1.0,
                    completed=T + 1.2,
                ),
                Vertex("sha256:f", "FROM img", started=T + 1.0, completed=T + 1.25),
            ]
        )
    )
    display.close()
    assert out.getvalue().splitlines() == [
        "#1 FROM img",
        "#1 CACHED",
        "",
        "#2 load build context",
        "#2 DONE 0.0s",
        "",
        "#1 FROM img",
        "#1 sha256:b 5B / 5B 0.2s done",
        "#1 DONE 0.2s",
    ]


def test_what_comes_within_100_ms_is_printed_as_buildctl_prints_a_batch() -> None:
    """buildctl prints what came at most every 100 ms: the steps that ended in a batch come
    first, in the order they ended, each as one block; a step still running after them."""
    out = io.StringIO()
    display = make_display("plain", out)
    display(
        SolveStatus.of(
            [
                Vertex("sha256:a", "load definition", started=T),
                Vertex("sha256:b", "load ignore", started=T + 0.001),
                VertexStatus(
                    "transferring context:", "sha256:b", T + 0.002, current=2, completed=T + 0.002
                ),
                VertexStatus(
                    "transferring dockerfile:",
                    "sha256:a",
                    T + 0.003,
                    current=58,
                    completed=T + 0.003,
                ),
                Vertex("sha256:c", "RUN long", started=T + 0.01),
                Vertex("sha256:b", "load ignore", started=T + 0.001, completed=T + 0.004),
                Vertex("sha256:a", "load definition", started=T, completed=T + 0.005),
                Vertex("sha256:d", "RUN short", started=T + 0.011),
                VertexLog("sha256:d", T + 0.02, 1, b"short says\n"),
                Vertex("sha256:d", "RUN short", started=T + 0.011, completed=T + 0.05),
            ]
        )
    )
    display(SolveStatus.of([Vertex("sha256:c", "RUN long", started=T + 0.01, completed=T + 1)]))
    display.close()
    assert out.getvalue().split("\n\n") == [
        "#1 load ignore\n#1 transferring context: 2B done\n#1 DONE 0.0s",
        "#2 load definition\n#2 transferring dockerfile: 58B done\n#2 DONE 0.0s",
        "#3 RUN short\n#3 0.009 short says\n#3 DONE 0.0s",
        "#4 RUN long\n#4 DONE 1.0s\n",
    ]


def test_a_running_steps_block_stays_open_and_others_wait_for_it() -> None:
    """A step's news while another's block is open waits for that block to end; a step that
    ends meanwhile is shown at once, whole, and the open block is taken up again after it."""
    out = io.StringIO()
    display = make_display("plain", out)
    for batch in (
        [Vertex("sha256:c", "RUN long", started=T), VertexLog("sha256:c", T, 1, b"one\n")],
        [Vertex("sha256:d", "RUN other", started=T + 0.2)],
        [VertexLog("sha256:d", T + 0.4, 1, b"other says\n")],
        [VertexLog("sha256:c", T + 0.6, 1, b"two\n")],
        [Vertex("sha256:e", "RUN short", started=T + 0.8)],
        [Vertex("sha256:e", "RUN short", started=T + 0.8, completed=T + 1.0)],
        [VertexLog("sha256:c", T + 1.2, 1, b"three\n")],
        [Vertex("sha256:c", "RUN long", started=T, completed=T + 1.4)],
        [Vertex("sha256:d", "RUN other", started=T + 0.2, completed=T + 1.6)],
    ):
        display(SolveStatus.of(batch))
    display.close()
    assert out.getvalue().split("\n\n") == [
        "#1 RUN long\n#1 0.000 one\n#1 0.600 two\n#1 ...",
        "#2 RUN short\n#2 DONE 0.2s",
        "#1 RUN long\n#1 1.200 three\n#1 DONE 1.4s",
        "#3 RUN other\n#3 0.200 other says\n#3 DONE 1.4s\n",
    ]


def test_a_step_that_waits_is_shown_after_a_while_even_if_nothing_else_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a step printed while another's block was open waits at most about
    SWITCH_AFTER, then shows, whether or not another record comes (a timer)."""
    from llbkit.core.cli import progress_ui

    monkeypatch.setattr(progress_ui, "SWITCH_AFTER", 0.2)
    out = io.StringIO()
    display = make_display("plain", out)
    display(
        SolveStatus.of(
            [
                Vertex("sha256:a", "RUN silent", started=T),
                Vertex("sha256:b", "RUN chatty", started=T),
                VertexLog("sha256:b", T + 0.01, 1, b"hello\n"),
            ]
        )
    )
    assert "hello" not in out.getvalue()  # waits behind the open block
    deadline = time.monotonic() + 5
    while "hello" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.getvalue().splitlines() == [
        "#1 RUN silent",
        "#1 ...",
        "",
        "#2 RUN chatty",
        "#2 0.010 hello",
    ]
    display.close()


def test_a_start_sent_again_after_the_end_does_not_reopen_the_step() -> None:
    out = io.StringIO()
    display = make_display("plain", out)
    display(SolveStatus.of([Vertex("sha256:a", "step", started=T)]))
    display(SolveStatus.of([Vertex("sha256:a", "step", started=T, completed=T + 0.3)]))
    display(SolveStatus.of([Vertex("sha256:a", "step", started=T)]))  # a replay's copy
    display.close()
    assert out.getvalue().splitlines() == ["#1 step", "#1 DONE 0.3s"]


def test_a_step_found_cached_and_reopened_at_once_shows_as_one_block() -> None:
    """Both in one of buildctl's batches: it sees the step running, then done, never cached
    (a source found cached and reopened at once to fetch what a later step reads)."""
    out = io.StringIO()
    display = make_display("plain", out)
    display(
        SolveStatus.of(
            [
                Vertex("sha256:f", "FROM img", started=T),
                Vertex("sha256:f", "FROM img", started=T, completed=T + 0.001, cached=True),
                Vertex("sha256:f", "FROM img", started=T + 0.002),
                VertexStatus("sha256:b", "sha256:f", T + 0.06, current=1, total=5, started=T),
            ]
        )
    )
    display(
        SolveStatus.of(
            [
                VertexStatus(
                    "sha256:b",
                    "sha256:f",
                    T + 0.4,
                    current=5,
                    total=5,
                    started=T,
                    completed=T + 0.4,
                ),
                Vertex("sha256:f", "FROM img", started=T + 0.002, completed=T + 0.5),
            ]
        )
    )
    display.close()
    assert out.getvalue().splitlines() == [
        "#1 FROM img",
        "#1 sha256:b 1B / 5B 0.1s",
        "#1 sha256:b 5B / 5B 0.4s done",
        "#1 DONE 0.5s",
    ]


def test_a_sub_tasks_progress_shows_as_buildctl_throttles_it() -> None:
    """One line per batch (its latest state), and only for 5 % more or 5 s later, or done."""
    out = io.StringIO()
    display = make_display("plain", out)
    total = 1000
    records = [Vertex("sha256:f", "FROM img", started=T)]
    for n, done in enumerate((10, 20, 30, 200, 210, 220, 230, 240, 250, 260)):
        when = T + 0.2 * (n + 1)
        records.append(VertexStatus("blob", "sha256:f", when, current=done, total=total, started=T))
    records.append(VertexStatus("blob", "sha256:f", T + 8, current=270, total=total, started=T))
    records.append(
        VertexStatus(
            "blob", "sha256:f", T + 8.1, current=total, total=total, started=T, completed=T + 8.1
        )
    )
    for record in records:
        display(SolveStatus.of([record]))
    display.close()
    assert out.getvalue().splitlines() == [
        "#1 FROM img",
        "#1 blob 10B / 1.00kB 0.2s",
        "#1 blob 200B / 1.00kB 0.8s",  # 20 and 30 were too little news
        "#1 blob 250B / 1.00kB 1.8s",
        "#1 blob 270B / 1.00kB 8.0s",  # 1 % more, but 5 s after the line before
        "#1 blob 1.00kB / 1.00kB 8.1s done",
    ]


def test_what_a_step_sent_while_it_waited_comes_before_its_later_news() -> None:
    out = io.StringIO()
    display = make_display("plain", out)
    for batch in (
        [Vertex("sha256:a", "RUN a", started=T), VertexLog("sha256:a", T, 1, b"a1\n")],
        [Vertex("sha256:b", "RUN b", started=T + 0.2), VertexLog("sha256:b", T + 0.2, 1, b"b1\n")],
        [
            Vertex("sha256:a", "RUN a", started=T, completed=T + 0.4),
            VertexLog("sha256:b", T + 0.41, 1, b"b2\n"),
        ],
        [Vertex("sha256:b", "RUN b", started=T + 0.2, completed=T + 0.6)],
    ):
        display(SolveStatus.of(batch))
    display.close()
    assert out.getvalue().splitlines() == [
        "#1 RUN a",
        "#1 0.000 a1",
        "#1 DONE 0.4s",
        "",
        "#2 RUN b",
        "#2 0.000 b1",
        "#2 0.210 b2",
        "#2 DONE 0.4s",
    ]
