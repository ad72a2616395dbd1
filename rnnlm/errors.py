"""The exception types for input a user can fix; the CLI prints them as one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RnnlmError(Exception):
    """Bad input or an unusable file: the message alone tells the user what to do."""


class SettingError(RnnlmError):
    """An error a setting fixes. The message ends by naming the settings (config keys such as
    "data.format", or a function's arguments such as "workers"), each with a value to try
    when there is one. The library never knows a front end's names for them: `shown` lets
    the CLI put its option names in their place."""

    def __init__(self, message: str, settings: dict[str, Any]) -> None:
        self.message, self.settings = message, settings
        super().__init__(self.shown(lambda name: name, "="))

    def shown(self, name_of: Callable[[str], str], joiner: str = " ") -> str:
        named = [
            name_of(name) if value is None else f"{name_of(name)}{joiner}{value}"
            for name, value in self.settings.items()
        ]
        return f"{self.message} {', '.join(named)}"
