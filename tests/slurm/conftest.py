"""The local SLURM cluster for the `slurm` tests (scripts/slurm_local.sh), started once a session.

The cluster is started when the machine allows it (root, and SLURM installed or apt-get to
install it); otherwise every test skips with the reason. One that is already up (`make
test-slurm` starts it first, or a user did) is used and left running. SPECTRUM_REQUIRE_SLURM=1
(.ci/run sets it) turns the skip into a failure: CI must run these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, TESTS

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
CLUSTER_DIR = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/spectrum-slurm"))


def _unavailable(reason: str) -> None:
    if os.environ.get("SPECTRUM_REQUIRE_SLURM") == "1":
        pytest.fail(f"SPECTRUM_REQUIRE_SLURM=1 but the local SLURM cluster is unavailable: {reason}")
    pytest.skip(f"no local SLURM cluster: {reason}")


def _script(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "SLURM_LOCAL_DIR": str(CLUSTER_DIR)})


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """Start the local cluster (or use the running one); return the environment a client needs
    (SLURM_CONF, PATH with the sacct stand-in, PYTHONPATH with this folder's helpers)."""
    started_here = False
    if _script("status").returncode != 0:
        if os.geteuid() != 0:
            _unavailable("scripts/slurm_local.sh runs the daemons as root; this user is not root")
        if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
            _unavailable("SLURM is not installed and there is no apt-get to install it")
        proc = _script("start")
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
            _unavailable(f"scripts/slurm_local.sh start failed: {lines[-1]}")
        started_here = True
    env = {
        "SLURM_CONF": str(CLUSTER_DIR / "etc" / "slurm.conf"),
        "PATH": f"{CLUSTER_DIR / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, TESTS, TESTS / "slurm")),
    }
    yield env
    if started_here:
        _script("stop")
