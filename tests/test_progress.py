"""Progress goes through a callback (progress.py); the CLI draws it, and a callback that
fails never stops the work."""

from __future__ import annotations

import logging

import pytest

from byllm_distill.progress import Step, report


def test_report_hands_steps_to_a_callback_and_a_failing_one_is_switched_off(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Step] = []
    report(seen.append, Step("train x", 1, 3, "step", {"loss": "1.0"}))
    report(None, Step("train x", 2, 3, "step"))
    report(False, Step("train x", 2, 3, "step"))  # older callers' progress=False
    assert seen == [Step("train x", 1, 3, "step", {"loss": "1.0"})]

    calls = []

    def broken(step: Step) -> None:
        calls.append(step)
        raise RuntimeError("terminal went away")

    with caplog.at_level(logging.WARNING, logger="byllm_distill"):
        for done in range(3):
            report(broken, Step("corpus", done, 3, "level"))
    assert len(calls) == 1 and caplog.text.count("progress display failed") == 1


def test_the_cli_bars_follow_the_steps_and_close_when_done(
        capsys: pytest.CaptureFixture[str]) -> None:
    from byllm_distill.cli_common import progress_bars

    show = progress_bars()
    for done in (1, 2, 4):
        show(Step("held-out eval s", done, 4, "call", {"ok": "yes"}))
    err = capsys.readouterr().err
    assert "held-out eval s" in err and "4/4" in err and "ok=yes" in err
