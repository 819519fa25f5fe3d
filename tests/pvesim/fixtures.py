"""pytest fixtures for tests that talk to the PVE simulator.

Use from a test package's conftest.py:

    from tests.pvesim.fixtures import pve_sim, pve_sim_factory, pve_version  # noqa: F401

Every test that uses ``pve_sim`` or ``pve_sim_factory`` runs once per supported PVE version (the
``pve_version`` fixture: 9.1, the default, and 8.4), each against that version's own API schema.
``pve_sim`` yields a started simulator (FakeBackend) and stops it afterwards. A request the
simulator rejected (schema, unknown path, oversized body ...) fails the test that sent it, at
teardown, unless the test consumed it with ``pve_sim.take_rejections()`` or
``with pve_sim.expecting_rejection(): ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.pvesim.simulator import PveSimulator


def _finish(sim: PveSimulator) -> None:
    bad = sim.unexpected_rejections()
    sim.stop()
    if bad:
        lines = "\n  ".join(str(r) for r in bad)
        pytest.fail(f"the PVE simulator rejected {len(bad)} request(s) this test did not expect:\n  {lines}",
                    pytrace=False)


PVE_VERSIONS = ("9.1", "8.4")  # the default first


@pytest.fixture(params=PVE_VERSIONS, ids=lambda v: f"pve{v}")
def pve_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pve_sim(pve_version: str) -> Iterator[PveSimulator]:
    sim = PveSimulator(version=pve_version).start()
    try:
        yield sim
    finally:
        _finish(sim)


@pytest.fixture
def pve_sim_factory(pve_version: str) -> Iterator[Callable[..., PveSimulator]]:
    """Start simulators with custom options: ``sim = pve_sim_factory(backend=..., task_duration=1)`` (of the
    test's PVE version unless *version* is given)."""
    started: list[PveSimulator] = []

    def make(**options: Any) -> PveSimulator:
        options.setdefault("version", pve_version)
        sim = PveSimulator(**options).start()
        started.append(sim)
        return sim

    try:
        yield make
    finally:
        errors = []
        for sim in started:
            try:
                _finish(sim)
            except pytest.fail.Exception as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)
