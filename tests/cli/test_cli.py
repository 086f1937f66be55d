from __future__ import annotations

import subprocess
import sys
import time

from simdiff.cli import build_parser, main


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "simdiff", "--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr
    assert "bench" in res.stdout
    # The whole interpreter start is included; heavy imports (torch, numba, mujoco) would take seconds.
    assert elapsed < 5.0


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from simdiff.cli import build_parser; build_parser();"
        "bad = [m for m in ('torch', 'numba', 'mujoco', 'gymnasium', 'robosuite', 'ray', 'h5py') if m in sys.modules];"
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_unknown_benchmark_is_a_clear_error(capsys):
    assert main(["bench", "no-such-bench"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'no-such-bench'" in err


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"bench"}
    for name in sub.choices:
        assert sub.choices[name].description
