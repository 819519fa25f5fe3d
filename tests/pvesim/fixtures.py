"""pytest fixtures for tests that talk to the PVE simulator.

Use from a test package's conftest.py:

    from tests.pvesim.fixtures import pve_sim, pve_sim_factory  # noqa: F401

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


@pytest.fixture
def pve_sim() -> Iterator[PveSimulator]:
    sim = PveSimulator().start()
    try:
        yield sim
    finally:
        _finish(sim)


@pytest.fixture
def pve_sim_factory() -> Iterator[Callable[..., PveSimulator]]:
    """Start simulators with custom options: ``sim = pve_sim_factory(backend=..., task_duration=1)``."""
    started: list[PveSimulator] = []

    def make(**options: Any) -> PveSimulator:
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
