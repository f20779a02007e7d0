"""pytest plugin of `benchmarks/gpu_check.py`: a deadline for each test, and a journal that outlives a run
ended by one.

Loaded with ``-p gpu_check_pytest`` (benchmarks/ on ``PYTHONPATH``); set by the environment:

* ``GPU_CHECK_TEST_TIMEOUT`` (seconds per test, setup and teardown included; 0: none): armed with
  ``faulthandler.dump_traceback_later(..., exit=True)``, whose watchdog is a C thread that needs no GIL,
  so it also ends a test stuck inside CUDA, DALI or NCCL code, where no Python-level alarm or signal
  handler would run. It writes every thread's stack to ``GPU_CHECK_TEST_STACKS`` and ends the process;
  the caller reruns pytest without the tests already done and counts the one left open as timed out
  (pytest-timeout's ``thread`` method does the same; it is not a dependency of the project).
* ``GPU_CHECK_TEST_JOURNAL``: JSON lines, appended and flushed as they happen: ``{"start": id}``, one
  ``{"report": id, "when", "outcome", "message"}`` per phase, ``{"collect_error": id, "message"}``, and
  ``{"finish": exitstatus}`` at the end of a run that was not cut short.
"""

from __future__ import annotations

import faulthandler
import json
import os

import pytest

_TIMEOUT = float(os.environ.get("GPU_CHECK_TEST_TIMEOUT") or 0)
_JOURNAL = os.environ.get("GPU_CHECK_TEST_JOURNAL")
_STACKS = None
if _TIMEOUT > 0:
    # a file of its own: pytest captures fd 2 during a test, and faulthandler needs a real descriptor
    _STACKS = open(os.environ.get("GPU_CHECK_TEST_STACKS") or os.devnull, "a")  # noqa: SIM115 - lives as long as the process


def _write(record: dict) -> None:
    if _JOURNAL:
        with open(_JOURNAL, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _message(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    text = getattr(report, "longreprtext", "") or ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[0][1:].strip() if errors else lines[-1] if lines else "")[:300]


def pytest_runtest_logstart(nodeid, location):
    _write({"start": nodeid})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _TIMEOUT > 0:
        faulthandler.dump_traceback_later(_TIMEOUT, exit=True, file=_STACKS)
    try:
        yield
    finally:
        if _TIMEOUT > 0:
            faulthandler.cancel_dump_traceback_later()


def pytest_runtest_logreport(report):
    record = {"report": report.nodeid, "when": report.when, "outcome": report.outcome}
    if report.outcome != "passed":
        record["message"] = _message(report)
    if report.when == "call":
        record["seconds"] = report.duration
    _write(record)


def pytest_collectreport(report):
    if report.failed:
        _write({"collect_error": report.nodeid, "message": _message(report)})


def pytest_sessionfinish(session, exitstatus):
    _write({"finish": int(exitstatus)})
