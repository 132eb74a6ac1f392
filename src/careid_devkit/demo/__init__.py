"""`careid-devkit demo`: the whole sign-in chain on this machine, with no hardware.

`DemoChain` (chain.py) starts and stops the parts; `careid-devkit demo` (command.py)
runs one until Ctrl-C; the end-to-end tests share one. DEMO/TEST MATERIAL throughout.
"""

from __future__ import annotations

from careid_devkit.demo.accounts import (
    DEMO_ACCOUNTS,
    DEMO_PASSWORD,
    DEMO_PIN,
    UNREGISTERED_UUID,
    CardSpec,
    DemoAccount,
    account_by_uid,
    demo_cards,
)
from careid_devkit.demo.chain import ChainSettings, DemoChain, PartMissingError
from careid_devkit.demo.command import register, run_demo
from careid_devkit.demo.configs import DemoUrls
from careid_devkit.demo.ports import DemoPorts, PortInUseError, port_is_free
from careid_devkit.demo.processes import ServiceFailedError, ServiceProcess
from careid_devkit.net import free_port

__all__ = [
    "DEMO_ACCOUNTS",
    "DEMO_PASSWORD",
    "DEMO_PIN",
    "UNREGISTERED_UUID",
    "CardSpec",
    "ChainSettings",
    "DemoAccount",
    "DemoChain",
    "DemoPorts",
    "DemoUrls",
    "PartMissingError",
    "PortInUseError",
    "ServiceFailedError",
    "ServiceProcess",
    "account_by_uid",
    "demo_cards",
    "free_port",
    "port_is_free",
    "register",
    "run_demo",
]
