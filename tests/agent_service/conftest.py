"""Fixtures for the agent service: the virtual card slot in reader 00 01 and agents
started in-process on a free port, pinned to that reader, with the env PIN provider."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from agent_service_support import ORIGIN, PIN, READER, CardSlot

from careid_agent.config import Overrides, parse_config
from careid_agent.pin import PinEntry
from careid_agent.serve import Agent
from careid_devkit.pcscd import Pcscd

StartAgent = Callable[..., Agent]


@pytest.fixture(scope="session")
def slot(pcscd: Pcscd) -> Iterator[CardSlot]:
    """Reader 00 01's card slot for the whole session; emptied at the end."""
    pytest.importorskip("smartcard", reason="needs pyscard (the agent extra)")
    card_slot = CardSlot()
    yield card_slot
    card_slot.remove()


@pytest.fixture
def start_agent() -> Iterator[StartAgent]:
    """Start agents (stopped after the test); settings as in agent.toml, plus --dev."""
    agents: list[Agent] = []

    def start(
        *,
        environ: Mapping[str, str] | None = None,
        pin_entry: PinEntry | None = None,
        **settings: Any,
    ) -> Agent:
        data = {"allowed_origins": [ORIGIN], "pin_provider": "env", "reader": READER}
        config = parse_config(data | settings, overrides=Overrides(port=0, dev=True))
        agent = Agent(
            config,
            environ={"CAREID_AGENT_PIN": PIN} if environ is None else environ,
            pin_entry=pin_entry,
        )
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.stop()
