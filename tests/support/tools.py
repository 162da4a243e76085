"""The external programs some tests drive, found the same way on every machine.

A tool the suite needs is required: when it is missing the test fails and says how to get
it, it is never skipped. Tools from pip packages of the ``[test]`` extra are looked up
beside this interpreter (its scripts directory), not wherever PATH happens to point;
system tools (apt packages .ci/run installs) are looked up on PATH.
"""
from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest


def python_tool(name: str, package: str) -> str:
    """The absolute path of ``name``, installed by pip package ``package`` into this environment."""
    schemes = [sysconfig.get_default_scheme(), f"{os.name}_user"]
    dirs = [Path(sysconfig.get_path("scripts", scheme)) for scheme in schemes]
    for directory in dirs:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} not found in {' or '.join(map(str, dirs))}: pip install {package} "
                "(it is in the [test] extra)", pytrace=False)


def system_tool(name: str, package: str) -> str:
    """The absolute path of system tool ``name`` (Debian package ``package``)."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not on PATH: apt-get install {package} (.ci/run installs it)", pytrace=False)
    return found
