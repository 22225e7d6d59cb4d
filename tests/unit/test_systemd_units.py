"""The unit files of deploy/systemd pass ``systemd-analyze verify`` and keep their promises.

``verify`` runs against a throwaway root holding the units, the system's own
units (``sysinit.target`` ...) and an executable at the ``ExecStart`` path, so
it checks our files and not whether Sluice is installed on this machine. Any
warning (an unknown key, a bad value) fails the test, not only errors.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SERVICES = ["sluice-scheduler.service", "sluice-triggerer.service", "sluice-worker@.service"]
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
ANALYZE = shutil.which("systemd-analyze")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(UNITS / name)
    return parser


def _exec_paths() -> set[str]:
    paths = set()
    for name in SERVICES:
        service = _unit(name)["Service"]
        for key in ("ExecStart", "ExecStartPre"):
            if key in service:
                paths.add(service[key].split()[0].lstrip("-"))
    return paths


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for unit in UNITS.iterdir():
        shutil.copy(unit, target / unit.name)
    for path in _exec_paths():
        binary = root / path.lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    return root


@pytest.mark.skipif(ANALYZE is None or not SYSTEM_UNITS.is_dir(),
                    reason="systemd-analyze exists only where systemd is installed")
def test_units_pass_systemd_analyze_verify(fake_root: Path):
    names = ["sluice-scheduler.service", "sluice-triggerer.service", "sluice-worker@1.service",
             "sluice-worker@2.service", "sluice.target"]
    done = subprocess.run([ANALYZE, "verify", f"--root={fake_root}", *names],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (0, ""), done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_services_are_supervised_and_hardened(name: str):
    service = _unit(name)["Service"]
    expected = {"Type": "notify", "Restart": "on-failure", "User": "sluice",
                "NoNewPrivileges": "yes", "ProtectSystem": "strict", "KillSignal": "SIGTERM"}
    assert {key: service.get(key) for key in expected} == expected
    assert int(service["WatchdogSec"]) > 0
    assert "\nEnvironmentFile=/etc/sluice/sluice.env\n" in (UNITS / name).read_text()
    assert "sluice.target" in _unit(name)["Install"]["WantedBy"].split()


def test_worker_template_scales_per_instance():
    unit = _unit("sluice-worker@.service")
    assert "%i" in unit["Unit"]["Description"]
    assert unit["Service"]["ExecStart"].endswith("sluice worker")
    # the stop timeout leaves room for the worker's drain (grace period 30 s by default)
    assert int(unit["Service"]["TimeoutStopSec"]) > 30


def test_environment_example_names_the_required_settings():
    text = (UNITS / "sluice.env.example").read_text()
    for key in ("SLUICE_DATABASE_URL", "SLUICE_REDIS_URL", "SLUICE_DAGS_FOLDER"):
        assert f"{key}=" in text
