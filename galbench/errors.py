"""The one exception type users see: what is wrong, where, and what would fix it."""

from __future__ import annotations


class GalbenchError(Exception):
    """An error in the user's input or environment; the CLI prints it as one line and exits 2."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text} ({self.fix})" if self.fix else text
