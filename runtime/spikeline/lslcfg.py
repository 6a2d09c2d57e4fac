"""liblsl configuration: must be chosen before pylsl is first imported.

liblsl's default configuration multicasts and broadcasts on the LAN to discover streams. spikeline
defaults to the loopback-only configuration shipped with the package (streams on this machine only);
a pipeline config can opt into the system/LAN configuration with `[lsl] config = "system"`, or name a
file of its own.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType


def loopback_config_path() -> Path:
    return Path(str(resources.files("spikeline") / "lsl_api.cfg"))


def configure(choice: str = "loopback") -> str:
    """Set LSLAPICFG for this process. choice: "loopback" | "system" | a file path. Returns what is in force.

    An LSLAPICFG already set in the environment wins (a test harness or an operator chose it).
    """
    if "pylsl" in sys.modules:
        return os.environ.get("LSLAPICFG", "system")
    if os.environ.get("LSLAPICFG"):
        return os.environ["LSLAPICFG"]
    if choice == "loopback":
        os.environ["LSLAPICFG"] = str(loopback_config_path())
    elif choice != "system":
        path = Path(choice)
        if not path.is_file():
            raise FileNotFoundError(f"LSL configuration file not found: {choice}")
        os.environ["LSLAPICFG"] = str(path.resolve())
    return os.environ.get("LSLAPICFG", "system")


def import_pylsl(choice: str = "loopback") -> ModuleType:
    """Import pylsl after making sure the chosen liblsl configuration is in force."""
    configure(choice)
    return importlib.import_module("pylsl")
