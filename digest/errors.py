"""The service's errors: one root, each also the builtin it resembles, each carrying its context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class DigestError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigError(DigestError, ValueError):
    """A setting is missing or wrong; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an import document, at a JSON path like ``posts[3].group_id``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ImportRefused(DigestError, ValueError):
    """A portal document was refused whole; ``problems`` lists every error by path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UnknownSchool(DigestError, LookupError):
    """No school with that id."""

    def __init__(self, school_id: str) -> None:
        super().__init__(f'unknown school "{school_id}"')
        self.school_id = school_id


class UnknownGuardian(DigestError, LookupError):
    """No guardian with that id."""

    def __init__(self, guardian_id: str) -> None:
        super().__init__(f'unknown guardian "{guardian_id}"')
        self.guardian_id = guardian_id


class NotSuppressed(DigestError, LookupError):
    """The address is not on the suppression list."""

    def __init__(self, address: str) -> None:
        super().__init__(f'"{address}" is not suppressed')
        self.address = address


class BounceSourceError(DigestError, OSError):
    """A path given to read bounces from is neither a Maildir, a directory nor a file."""


class TransportError(DigestError, OSError):
    """The transport cannot send at all: a bad URL, STARTTLS missing where required, a bad cert."""


class DeliveryFailed(DigestError):
    """One message was not accepted. ``blame`` says what follows:

    ``transient`` (retry later), ``recipient`` (permanent for this address: fail it and suppress
    the address), ``sender`` (the server blames us or we go too fast: pause the transport).
    """

    def __init__(
        self,
        reply: str,
        *,
        blame: Literal["transient", "recipient", "sender"],
        smtp_code: int | None = None,
        recipient: str | None = None,
    ) -> None:
        super().__init__(reply)
        self.reply = reply
        self.blame = blame
        self.smtp_code = smtp_code
        self.recipient = recipient

    @property
    def permanent(self) -> bool:
        return self.blame == "recipient"
