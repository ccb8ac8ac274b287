"""The errors of the Mews client and source, each with a message that is safe to show.

A module of their own, outside `sources.mews`, so that the command line can name them without
importing dlt: importing anything under `sources.mews` runs its `__init__`, which imports dlt
(about 1 s). `sources.mews.client` re-exports them. Also `counted`, for the numbers in the
messages people read.
"""

from __future__ import annotations


def counted(amount: float, noun: str, spec: str = "") -> str:
    """`amount` formatted with `spec`, then `noun`, plural unless the amount reads 1:
    "1 order", "0 orders", "2 retries", counted(1000, "note", ",") "1,000 notes"."""
    shown = format(amount, spec)
    if shown == "1":
        return f"{shown} {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{shown} {plural}"


class MewsError(Exception):
    """An expected failure whose message is safe to show: it never holds a token."""

    transient = False  # True: trying again later may succeed without anyone acting


class MewsConfigError(MewsError):
    """The client was configured with something unusable."""


class MewsApiError(MewsError):
    """The API refused a request (4xx/5xx) with its own message."""

    def __init__(self, operation: str, status: int, message: str, request_id: str | None = None):
        self.operation, self.status, self.api_message = operation, status, message
        self.request_id = request_id
        hint = {
            401: "check SOURCES__MEWS__CLIENT_TOKEN and SOURCES__MEWS__ACCESS_TOKEN",
            403: "the API refused this by a business rule; check the token's permissions",
        }.get(status, "")
        ref = f" (Request-Id {request_id})" if request_id else ""
        super().__init__(
            f"Mews {operation} answered {status}: {message}{ref}" + (f"; {hint}" if hint else "")
        )
        self.transient = status in (408, 429) or status >= 500


class RequestTooHeavyError(MewsApiError):
    """408: the request asked for too much; the fix is to ask for less, not to retry it."""


class RequestTimedOutError(RequestTooHeavyError):
    """No answer within the client's timeout to a request the server took: a heavy request may
    take that long and never come back as a 408, so it is treated as one."""

    def __init__(self, operation: str, timeout: float):
        MewsError.__init__(
            self,
            f"Mews {operation} did not answer within {timeout:g} s, even when asked for the "
            "least: try again later.",
        )
        self.operation, self.status, self.api_message = operation, 408, "no answer in time"
        self.request_id, self.transient = None, True


class IntervalTooLongError(MewsApiError):
    """400 on an UpdatedUtc interval longer than the strictest reading of "3 months" allows:
    probably that reading; the client shortens its windows and asks again."""


class MewsUnavailableError(MewsError):
    """The API could not be reached or kept failing after every retry."""

    transient = True


class MewsResponseError(MewsError):
    """The API answered 200 with something that is not what the documentation promises."""
