"""The example logon units in config/agent/ parse, and start `careid-agent serve` the way
each platform expects (a user's graphical session, ordinary rights, restart on crash)."""

from __future__ import annotations

import configparser
import plistlib
import xml.etree.ElementTree as ET
from pathlib import Path

from careid_agent.cli import build_parser

UNITS = Path(__file__).resolve().parents[2] / "config" / "agent"
TASK = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"


def test_systemd_user_unit() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNITS / "careid-agent.service", encoding="utf-8")
    assert unit["Service"]["ExecStart"].endswith("/careid-agent serve")
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "graphical-session.target"
    assert unit["Service"]["NoNewPrivileges"] == "yes"


def test_launchd_agent() -> None:
    with open(UNITS / "org.careid-bridge.agent.plist", "rb") as fh:
        plist = plistlib.load(fh)
    assert plist["ProgramArguments"][-1] == "serve"
    assert plist["ProgramArguments"][0].endswith("/careid-agent")
    assert plist["LimitLoadToSessionType"] == "Aqua" and plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}


def test_task_scheduler_task() -> None:
    task = ET.parse(UNITS / "careid-agent-task.xml").getroot()  # noqa: S314 - our own file
    assert task.find(f"{TASK}Triggers/{TASK}LogonTrigger") is not None
    principal = task.find(f"{TASK}Principals/{TASK}Principal")
    assert principal is not None
    assert principal.findtext(f"{TASK}RunLevel") == "LeastPrivilege"
    assert task.findtext(f"{TASK}Settings/{TASK}ExecutionTimeLimit") == "PT0S"
    actions = task.find(f"{TASK}Actions")
    assert actions is not None and actions.get("Context") == principal.get("id")
    command = actions.findtext(f"{TASK}Exec/{TASK}Command") or ""
    assert command.strip('"').endswith("pythonw.exe")  # no console window
    assert actions.findtext(f"{TASK}Exec/{TASK}Arguments") == "-m careid_agent.cli serve"


def test_the_units_command_line_is_one_the_agent_accepts() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.command == "serve" and args.config is None and not args.dev
