"""The phase report the e2e prints and the benchmark compares (pure arithmetic, fast)."""

from __future__ import annotations

from tests.e2e.phases import PhaseReport, report


def test_phases_are_the_gaps_between_recorded_starts_and_the_host_clock() -> None:
    status = {
        "timings": {
            "booting": 1030.0,
            "installing": 1040.0,
            "cloning": 1100.0,
            "building": 1110.0,
            "starting": 1200.0,
            "ready": 1210.0,
        },
        "steps": {"packages": 55.5, "clone": 2},
    }
    phases = report(status, created_at=1000.0, terminal_at=1215.0)
    assert phases.seconds == {
        "boot": 40.0,  # create → booting (30) + booting → installing (10)
        "installing": 60.0,
        "cloning": 10.0,
        "building": 90.0,
        "starting": 10.0,
        "ready": 5.0,
        "total": 215.0,
    }
    assert phases.steps == {"packages": 55.5, "clone": 2.0}
    assert "215.0" in phases.line("x") and "total" in PhaseReport.header()


def test_missing_timings_leave_columns_empty() -> None:
    phases = report({"phase": "ready"}, created_at=1000.0, terminal_at=None)
    assert phases.seconds == {}
    assert phases.line("x").split()[1:] == ["-"] * 7
