import os
import pathlib
import re
import sys

import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "seqdsl" / "lang" / "library").glob("*.seq"))
sys.path.insert(0, str(pathlib.Path(__file__).parent))

# CI runs the same examples every time, so a red run can be reproduced.
settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def sketch_path() -> pathlib.Path:
    """The language sketch: the shared design copy when it is beside the
    checkout, else the copy kept with the tests."""
    shared = ROOT.parent / "shared" / "design" / "seq-language.md"
    return shared if shared.exists() else pathlib.Path(__file__).parent / "data" / "seq-language.md"


def sketch_examples() -> list[str]:
    return re.findall(r"```\n(.*?)```", sketch_path().read_text("utf-8"), re.S)


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    from seqdsl.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err
    return run
