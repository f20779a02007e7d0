"""`stts.progress.ProgressLog`: a live bar on a terminal, whole plain lines elsewhere."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from stts.progress import ProgressLog, format_duration


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=80, color_system=None), buf


def test_lines_when_asked_and_at_the_end_full_width():
    con, buf = console(terminal=False)
    info = "loss 1.234 lr 1.00e-04 σ 0.050 " + "x" * 80  # longer than the console
    with ProgressLog("train", 10, console=con, unit="steps", every_seconds=3600) as p:
        p.update(1, info)  # not due: no line
        p.update(3, info, line=True)
        p.update(advance=2)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"train 3/10 steps (30%) · {info} · 0:00 elapsed · ETA ")
    assert lines[1].startswith("train 5/10 steps (50%)")  # the end prints what changed since


def test_a_line_at_least_every_every_seconds():
    con, buf = console(terminal=False)
    p = ProgressLog("eval", None, console=con, unit="views", every_seconds=0.0)
    p.start()
    for _ in range(3):
        p.update(advance=4)
    p.stop()
    assert buf.getvalue().splitlines() == [
        "eval 4 views · 0:00 elapsed",
        "eval 8 views · 0:00 elapsed",
        "eval 12 views · 0:00 elapsed",
    ]


def test_auto_is_a_bar_on_a_terminal_and_none_prints_nothing():
    con, _ = console(terminal=True)
    assert ProgressLog("x", 3, console=con).mode == "bar"
    con, buf = console(terminal=False)
    assert ProgressLog("x", 3, console=con).mode == "lines"
    with ProgressLog("x", 3, console=con, mode="none") as p:
        p.update(3, line=True)
    assert buf.getvalue() == ""
    with pytest.raises(ValueError, match="progress mode"):
        ProgressLog("x", 3, mode="loud")


def test_format_duration():
    assert [format_duration(s) for s in (7, 723, 3723)] == ["0:07", "12:03", "1:02:03"]
