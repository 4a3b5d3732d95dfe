"""The ``fxkit`` command line: the demo runs end to end and bad commands are refused."""

import subprocess
import sys

import pytest

from fxkit.cli import main


def test_demo_runs_and_checks_itself(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "captured by symbolic_trace" in out
    assert "x * param" in out  # the rewrite is visible in the regenerated code
    assert out.count(": True") == 2


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "fxkit", "demo"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
