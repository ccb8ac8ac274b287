"""HTTP client for the Mews Connector API: tokens, cursor pagination, retries, rate limit.

It knows Mews and nothing of dlt. Tokens live only in request bodies: they never reach a log
line, an exception message or `repr()`.
"""

from __future__ import annotations

import hashlib
import json
import random
import ssl
import threading
import time
from calendar import monthrange
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from itertools import product
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson
import pyarrow as pa

from sources.errors import (  # re-exported: the source and the pipeline name them from here
    IntervalTooLongError,
    MewsApiError,
    MewsConfigError,
    MewsError,
    MewsResponseError,
    MewsUnavailableError,
    RequestTimedOutError,
    RequestTooHeavyError,
    counted,
)
from sources.stop import stoppable_sleep

from .arrow_pages import ArrowPageReader
from .settings import (
    API_PATH,
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    DEFAULT_CLIENT,
    ENTERPRISES_OPERATION,
    FIRST_CONTACT_RETRIES,
    ITEMS_KEY,
    MAX_IDS_PER_REQUEST,
    MAX_RETRIES,
    MAX_RETRY_AFTER_SECONDS,
    MAX_WINDOW_DAYS_STRICTEST,
    MAX_WINDOW_MONTHS,
    MIN_PAGE_SIZE,
    MIN_WINDOW,
    NOTES_OPERATION,
    ORDER_ITEMS_OPERATION,
    ORDERS_OPERATION,
    PAGE_SIZE,
    PRODUCTS_OPERATION,
    RATE_DECREASE_FACTOR,
    RATE_LIMIT_REQUESTS,
    RATE_LIMIT_SECONDS,
    RATE_RECOVERY_PER_SUCCESS,
    REQUEST_TIMEOUT_SECONDS,
    SERVICES_OPERATION,
)
from .sizes import RequestSizes

__all__ = [
    "ClientStats",
    "Counters",
    "IntervalTooLongError",
    "MewsApiError",
    "MewsClient",
    "MewsConfigError",
    "MewsError",
    "MewsResponseError",
    "MewsUnavailableError",
    "RequestSizes",
    "RequestTimedOutError",
    "RequestTooHeavyError",
    "SlidingWindowLimiter",
    "format_utc",
]

# A page of items: decoded objects, or an Arrow table of the fields the caller asked for.
Page = list[dict[str, Any]] | pa.Table
Interval = tuple[datetime, datetime]  # [start, end) of UpdatedUtc
OrdersPart = tuple[list[str], Interval]  # the services and the interval of an orders request
Part = TypeVar("Part")  # what a request asks for that can be halved: ids, an interval

# The filter that holds the ids a request asks about, for its size (see RequestSizes). A
# configured EnterpriseIds filter is not split: it is as the operator set it.
ID_FILTERS = {
    ORDERS_OPERATION: "ServiceIds",
    NOTES_OPERATION: "ServiceOrderIds",
    SERVICES_OPERATION: "ServiceIds",
    ENTERPRISES_OPERATION: "EnterpriseIds",
    ORDER_ITEMS_OPERATION: "ServiceIds",
    PRODUCTS_OPERATION: "ServiceIds",
}


class TooManyIdsError(RequestTooHeavyError):
    """A request that would hold more ids than Mews answers in time; never sent: the caller
    asks for fewer."""

    def __init__(self, operation: str, ids: int, ceiling: int):
        MewsError.__init__(
            self,
            f"Mews {operation} answers no more than {ceiling} ids in time at the moment, and "
            f"this request had {ids}: try again later.",
        )
        self.operation, self.status, self.api_message = operation, 408, "too many ids"
        self.request_id, self.transient = None, True


@dataclass
class Counters:
    """Counters that several threads add to."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


@dataclass
class ClientStats(Counters):
    """What the client did, for the run summary and the tests."""

    requests: Counter[str] = field(default_factory=Counter)  # per operation
    retries: int = 0
    throttled: int = 0  # 429 answers
    heavy: int = 0  # 408 answers
    timeouts: int = 0  # getAll requests with no answer within the timeout: taken as 408s
    short_pages: int = 0  # pages with fewer items than asked for that were not the last
    end_probes: int = 0  # requests that only showed a short page was the last: its cost
    too_long_windows: int = 0  # 400s that taught the client the strictest "3 months"
    splits: int = 0  # requests halved (ids or interval) because even small pages were too heavy
    limiter_wait_seconds: float = 0.0  # waited by our own limiter, before sending
    # When the limiter's wait under way began (its clock), None when none is: at most one
    # thread waits in the limiter at a time, the others wait for it.
    waiting_since: float | None = None
    throttle_wait_seconds: float = 0.0  # waited because of 429s
    # The API answered at least once in this run (the stats are the run's, across its steps):
    # until then, a failure to reach it is most likely a wrong address, said at once.
    reached: bool = False
    # Seconds Mews' clock is ahead of this machine's (negative: behind), from the Date header
    # of the latest answer that had a valid one; None until then.
    mews_clock_offset: float | None = None


class SlidingWindowLimiter:
    """At most `allowed` requests in any `window_seconds`, shared by every client of one
    AccessToken in the process (`limiter_for`); and a pause after a 429 that holds them all.

    A request holds its place in the window from its start until `window_seconds` after its
    answer (`release`), not after its start: the server counts it at some moment in between,
    which a loaded machine or a slow answer can move by more than any fixed margin (three
    429s in the 2026-12-02 benchmark with a 0.5 s margin on starts). Counted so, request k
    starts at least a window after request k - `allowed` was answered, so after the server
    counted it, whatever the delays; it costs one answer time per window (some 0.1 s in 30).

    `allowed` starts at `max_requests`. Mews' limit is "best effort" and another process may
    share the token, so a 429 means the real limit is lower than ours for now: each 429
    multiplies `allowed` by RATE_DECREASE_FACTOR, and each answered request adds
    RATE_RECOVERY_PER_SUCCESS back, up to `max_requests` (additive increase, multiplicative
    decrease, as TCP does: quick to back off, slow to push again).
    """

    def __init__(
        self,
        max_requests: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = stoppable_sleep,
    ):
        if max_requests < 1 or window_seconds <= 0:
            raise MewsConfigError(
                "SOURCES__MEWS__RATE_LIMIT_REQUESTS must be 1 or more (0 turns the limiter "
                "off) and SOURCES__MEWS__RATE_LIMIT_SECONDS more than 0 (default 200 per 30)."
            )
        self.max_requests = max_requests
        self.allowed = float(max_requests)
        self.window_seconds = window_seconds + min(0.1, window_seconds * 0.01)  # timer slack
        self._clock, self._sleep = clock, sleep
        self._in_flight = 0
        self._answered: deque[float] = deque()  # when the requests of the window were answered
        self._lock = threading.Lock()
        # Not `_lock`, which a caller holds while it sleeps: answers and 429s must get through.
        self._count_lock = threading.Lock()
        self._rate_lock = threading.Lock()
        self._paused_until = float("-inf")

    def acquire(self, sleep: Callable[[float], None] | None = None) -> tuple[float, float]:
        """Block until a request may start, waiting with `sleep` (default: the limiter's);
        return the seconds waited for the window and for a pause after a 429. Every
        acquire() needs its release() when the answer comes."""
        sleep = sleep or self._sleep
        window_wait = pause_wait = 0.0
        # Holding the lock while sleeping is deliberate: every other caller would wait anyway,
        # and it keeps the order of requests fair.
        with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    pause = self._paused_until - now
                    sleep(pause)
                    pause_wait += pause
                    continue
                with self._count_lock:
                    answered = self._answered
                    while answered and answered[0] <= now - self.window_seconds:
                        answered.popleft()
                    over = self._in_flight + len(answered) - int(self.allowed) + 1
                    if over <= 0:
                        self._in_flight += 1
                        return window_wait, pause_wait
                    # Until enough answers have left the window, or (all places held by
                    # requests under way) a little, to look again once one is answered.
                    pause = (
                        answered[over - 1] + self.window_seconds - now
                        if over <= len(answered)
                        else 0.05
                    )
                sleep(pause)
                window_wait += pause

    def release(self) -> None:
        """The request an acquire() let start was answered (or failed): its place in the
        window frees `window_seconds` from now."""
        with self._count_lock:
            self._in_flight -= 1
            self._answered.append(self._clock())

    def throttled(self, pause: float) -> None:
        """A 429: no thread starts a request for `pause` seconds, and fewer start after."""
        with self._rate_lock:
            now = self._clock()
            # 429s that come during the pause answer requests sent before it: one signal.
            if now >= self._paused_until:
                self.allowed = max(1.0, self.allowed * RATE_DECREASE_FACTOR)
            self._paused_until = max(self._paused_until, now + pause)

    def succeeded(self) -> None:
        """An answered request: allow a little more again."""
        with self._rate_lock:
            self.allowed = min(self.max_requests, self.allowed + RATE_RECOVERY_PER_SUCCESS)


# One limiter per AccessToken (by its digest: the token itself is not kept) and limit, for the
# whole process: Mews counts a token's requests whoever sends them, so the steps of a run, the
# runs of one process and the properties of a group that share a portfolio token all share
# it. A limiter made per client forgot the previous step's last 30 s: 3 429s in a sync of 2,000
# orders in steps of 300 under a 25 / 1 s limit (none with one limiter).
_LIMITERS: dict[tuple[str, int, float, Callable[[], float]], SlidingWindowLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(
    access_token: str, max_requests: int, window_seconds: float, clock: Callable[[], float]
) -> SlidingWindowLimiter:
    """The process's limiter of `access_token` for that limit, measured with `clock`."""
    digest = hashlib.sha256(access_token.encode()).hexdigest()
    key = (digest, max_requests, window_seconds, clock)
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = SlidingWindowLimiter(max_requests, window_seconds, clock=clock)
        return _LIMITERS[key]


def format_utc(moment: datetime) -> str:
    """ISO 8601 UTC as Mews expects it, keeping sub-second precision only when there is some."""
    moment = moment.astimezone(UTC)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def retry_after_seconds(value: str | None, now: Callable[[], datetime]) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    moment = http_date(value)
    return None if moment is None else max(0.0, (moment - now()).total_seconds())


def http_date(value: str | None) -> datetime | None:
    """The moment in an HTTP-date header (whole seconds, UTC), or None if it is missing or not
    a date."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar-month addition that clamps the day, as .NET's AddMonths: 31 Jan + 1 = 28 Feb."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, monthrange(year, month)[1]))


def chunked(ids: Iterable[str], size: int = MAX_IDS_PER_REQUEST) -> Iterator[list[str]]:
    """Consecutive lists of at most `size` ids, as slices of the list."""
    ids = ids if isinstance(ids, list) else list(ids)
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def id_filters(**id_lists: list[str] | None) -> Iterator[dict[str, list[str]]]:
    """The filters of the requests that together ask for every id given: one per combination
    of batches of at most MAX_IDS_PER_REQUEST ids of each list (None: not filtered on), so
    that no request names more ids in one list than Mews takes. One empty filter for none."""
    given = {name: list(chunked(ids)) for name, ids in id_lists.items() if ids}
    for batches in product(*given.values()):
        yield dict(zip(given, batches, strict=True))


def asks_for_nothing(*id_lists: list[str] | None) -> bool:
    """True when an id filter is an empty list: nothing can match it, and Mews takes no empty
    id list (`minItems: 1`). None is no filter."""
    return any(ids is not None and not ids for ids in id_lists)


def halve_ids(ids: list[str]) -> tuple[list[str], list[str]] | None:
    """Two halves of a batch of ids; None for a single id."""
    half = len(ids) // 2
    return (ids[:half], ids[half:]) if half else None


def halve_interval(window: Interval) -> tuple[Interval, Interval] | None:
    """Two halves of [start, end), split at a whole second; None once it is MIN_WINDOW or
    shorter. Halves of whole-second bounds have whole-second bounds, as Mews' format has."""
    start, end = window
    if end - start <= MIN_WINDOW:
        return None
    middle = start + timedelta(seconds=(end - start).total_seconds() // 2)
    return (start, middle), (middle, end)


def whole_seconds(window: Interval) -> Interval:
    """The shortest interval of whole seconds that holds `window`: Mews documents times as
    YYYY-MM-DDThh:mm:ssZ. Widened, never narrowed: an order at a bound may come twice (kept
    once), but none is lost."""
    start, end = window
    ceiling = end if not end.microsecond else end.replace(microsecond=0) + timedelta(seconds=1)
    return start.replace(microsecond=0), ceiling


def check_platform_url(url: str) -> str:
    """Return the URL without a trailing slash, or raise MewsConfigError."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise MewsConfigError(
            f"SOURCES__MEWS__PLATFORM_URL must be an address like https://api.mews.com, "
            f"not {url!r}."
        )
    if API_PATH in parts.path.lower():
        raise MewsConfigError(
            f"SOURCES__MEWS__PLATFORM_URL must not hold {API_PATH} (the client adds it): drop "
            f"it, e.g. {parts.scheme}://{parts.netloc}."
        )
    return url.strip().rstrip("/")


def unreachable(exc: httpx.TransportError, where: str) -> MewsError | None:
    """The error for a first request that could not reach the API at `where` (host:port) if
    the address must be wrong: refused, or no TLS spoken there. None for what may be the
    network (a name that does not resolve, a timeout), which is retried a little."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    check = "check SOURCES__MEWS__PLATFORM_URL"
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return MewsConfigError(f"Nothing accepts connections at {where} (refused): {check}.")
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return MewsConfigError(
                f"The TLS certificate of {where} was not accepted ({cause.verify_message}): "
                f"{check}."
            )
        if isinstance(cause, ssl.SSLError):
            return MewsConfigError(
                f"{where} does not answer in TLS ({cause.reason or cause}), so it is no HTTPS "
                f"port: {check} (http:// for a plain HTTP server)."
            )
    return None


def not_the_api(
    response: httpx.Response, operation: str, where: str, first: bool
) -> MewsConfigError | None:
    """The error for an answer that cannot come from the Mews Connector API: a 501 (a server
    that does not take POST), or, as the first answer, a 200 or 4xx that is not JSON at all
    (a web page). Later, a body that is not JSON is taken for one cut short, and retried."""
    status = response.status_code
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no type"
    if status == 501:
        what = "501 Not Implemented"
    elif (
        first
        and status < 500
        and status not in (408, 429)
        and "json" not in kind  # JSON cut short on the way is retried
        and not is_json(response)
    ):
        what = f"{status} and {kind} instead of JSON"
    else:
        return None
    return MewsConfigError(
        f"{where} answered {operation} with {what}, so it is not the Mews Connector API: "
        "check SOURCES__MEWS__PLATFORM_URL (e.g. https://api.mews.com)."
    )


def is_json(response: httpx.Response) -> bool:
    try:
        orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return False
    return True


class MewsClient:
    """One Mews AccessToken's view of the Connector API.

    `rate_limit`: (requests, seconds) for the client-side limiter, None for none (then a 429
    holds only the thread that got it). `max_retry_after_seconds`: a 429 that asks to wait
    longer stops every request at once with MewsUnavailableError. `sleep` and `clock` let
    tests run without waiting.
    """

    def __init__(
        self,
        platform_url: str,
        client_token: str,
        access_token: str,
        client: str = DEFAULT_CLIENT,
        *,
        transport: httpx.BaseTransport | None = None,
        rate_limit: tuple[int, float] | None = (RATE_LIMIT_REQUESTS, RATE_LIMIT_SECONDS),
        page_size: int = PAGE_SIZE,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        max_retries: int = MAX_RETRIES,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
        sleep: Callable[[float], None] = stoppable_sleep,
        clock: Callable[[], float] = time.monotonic,
        stats: ClientStats | None = None,
        sizes: RequestSizes | None = None,
    ):
        for name, token in (("CLIENT_TOKEN", client_token), ("ACCESS_TOKEN", access_token)):
            if not isinstance(token, str) or not token.strip():
                raise MewsConfigError(f"SOURCES__MEWS__{name} is empty: set it to your Mews token.")
        if not 1 <= page_size <= PAGE_SIZE:
            raise MewsConfigError(f"The page size must be between 1 and {PAGE_SIZE}.")
        self._tokens = {"ClientToken": client_token.strip(), "AccessToken": access_token.strip()}
        self.client_name = client or DEFAULT_CLIENT
        self.page_size, self.timeout = page_size, timeout
        # The request sizes Mews answers in time, for every operation and thread: a caller
        # may pass what an earlier client learned.
        self.sizes = sizes if sizes is not None else RequestSizes()
        self._page_readers: dict[str, ArrowPageReader] = {}
        self.max_retries, self.backoff_base, self.backoff_max = (
            max_retries,
            backoff_base,
            backoff_max,
        )
        self.max_retry_after_seconds = max_retry_after_seconds
        self._sleep, self._clock = sleep, clock
        self._limiter = (
            limiter_for(self._tokens["AccessToken"], *rate_limit, clock=clock)
            if rate_limit
            else None
        )
        self._stopped: str | None = None  # why every later request fails at once
        self._http = httpx.Client(
            base_url=check_platform_url(platform_url) + API_PATH,
            transport=transport,
            timeout=timeout,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        self.stats = stats if stats is not None else ClientStats()
        # The longest UpdatedUtc window to send: None for MAX_WINDOW_MONTHS calendar months (the
        # documented limit, the most lenient reading), days once a 400 said that is too long.
        self.max_window_days: int | None = None

    def __repr__(self) -> str:
        return f"MewsClient({str(self._http.base_url)!r}, client={self.client_name!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MewsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one request -------------------------------------------------------------------------

    def post(
        self,
        operation: str,
        payload: dict[str, Any],
        arrow_pages: ArrowPageReader | None = None,
    ) -> dict[str, Any]:
        """POST one operation, retrying what is worth retrying; return the decoded body.

        With `arrow_pages`, a body it can read comes back with its items as an Arrow table,
        decoded without making a Python object per item.
        """
        content = json.dumps({**self._tokens, "Client": self.client_name, **payload}).encode()
        attempt = 0
        while True:
            if self._stopped:
                raise MewsUnavailableError(self._stopped)
            if self._limiter:
                window_wait, pause_wait = self._limiter.acquire(self._limiter_sleep)
                self._count(limiter_wait_seconds=window_wait, throttle_wait_seconds=pause_wait)
            self._count(operation=operation)
            try:
                response = self._send(operation, content)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ReadTimeout) and operation.endswith("/getAll"):
                    # Sent and taken, but no answer in time: the same request would most likely
                    # take as long again, so ask for less at once, as for a 408.
                    self._count(timeouts=1)
                    raise RequestTimedOutError(operation, self.timeout) from exc
                failure, pause = f"connection failed ({type(exc).__name__})", None
                if not self.stats.reached and isinstance(
                    exc, httpx.ConnectError | httpx.ConnectTimeout
                ):
                    if (error := unreachable(exc, self._where())) is not None:
                        raise error from None
                    if attempt >= FIRST_CONTACT_RETRIES:
                        raise MewsUnavailableError(
                            f"Cannot reach {self._where()} ({type(exc).__name__}: "
                            f"{str(exc) or 'no detail'}): try again later; if it persists, "
                            "check SOURCES__MEWS__PLATFORM_URL and the network."
                        ) from None
                    pause = min(1.0, self.backoff_base) * (attempt + 1)
            else:
                first, self.stats.reached = not self.stats.reached, True
                self._note_mews_clock(response)
                if error := not_the_api(response, operation, self._where(), first):
                    raise error
                status = response.status_code
                if status != 429 and self._limiter:
                    self._limiter.succeeded()
                if status == 200:
                    page = arrow_pages and arrow_pages.read(response.content)
                    if page:
                        return page
                    try:
                        # orjson (a dlt dependency) decodes pages about 2.5x faster than json.
                        data = orjson.loads(response.content)
                    except orjson.JSONDecodeError:
                        failure, pause = "the answer was not valid JSON", None
                    else:
                        if not isinstance(data, dict):
                            raise MewsResponseError(
                                f"Mews {operation} answered 200 without a JSON object."
                            )
                        return data
                elif status == 429:
                    failure = "rate limited (429)"
                    # An HTTP-date counts from Mews' clock, not this machine's.
                    pause = retry_after_seconds(response.headers.get("Retry-After"), self.mews_now)
                    self._count(throttled=1)
                    if pause is not None and pause > self.max_retry_after_seconds:
                        # Holding the run that long would hold its lock and its timer too;
                        # the other threads stop as well rather than push on meanwhile.
                        self._stopped = (
                            f"Mews {operation} asked to wait {pause:.0f} s, more than the "
                            f"{self.max_retry_after_seconds:g} s this client waits "
                            "(max_retry_after_seconds): try again later."
                        )
                        raise MewsUnavailableError(self._stopped)
                elif status == 408:
                    self._count(heavy=1)
                    raise RequestTooHeavyError(operation, status, *self._error_details(response))
                elif status >= 500:
                    failure, pause = f"server error {status}", None
                else:
                    raise MewsApiError(operation, status, *self._error_details(response))
            if attempt >= self.max_retries:
                raise MewsUnavailableError(
                    f"Mews {operation} still failing after {counted(attempt + 1, 'attempt')}: "
                    f"{failure}. "
                    "Try again later."
                )
            if pause is None:
                # Exponential backoff with full jitter, so parallel clients do not retry in step.
                pause = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))
            self._count(retries=1)
            if failure.startswith("rate limited") and self._limiter:
                # The token is over the limit, not this thread: every thread of the client
                # waits, in acquire(), which counts the wait.
                self._limiter.throttled(pause)
            else:
                if failure.startswith("rate limited"):
                    self._count(throttle_wait_seconds=pause)
                self._sleep(pause)
            attempt += 1

    def _limiter_sleep(self, seconds: float) -> None:
        """The limiter's waits: shown while under way (`stats.waiting_since`), and counted
        also when a stop cuts one short (a finished one is counted by `post`)."""
        started = self.stats.waiting_since = self._clock()
        try:
            self._sleep(seconds)
        except BaseException:
            self._count(limiter_wait_seconds=self._clock() - started)
            raise
        finally:
            self.stats.waiting_since = None

    def _send(self, operation: str, content: bytes) -> httpx.Response:
        try:
            return self._http.post("/" + operation, content=content)
        finally:
            if self._limiter:
                self._limiter.release()  # the answer is in: the window counts from now

    def _note_mews_clock(self, response: httpx.Response) -> None:
        """Keep how far Mews' clock is from this machine's, from the answer's Date header."""
        if (sent := http_date(response.headers.get("Date"))) is not None:
            # The header truncates to the second and the answer took a while to come: the
            # offset is never later than Mews' clock, by up to a second and the answer's trip.
            self.stats.mews_clock_offset = (sent - datetime.now(UTC)).total_seconds()

    def mews_now(self) -> datetime:
        """Mews' clock now, as its latest Date header told (at most a second and an answer's
        trip behind it, never ahead); this machine's clock until an answer had one."""
        offset = self.stats.mews_clock_offset
        return datetime.now(UTC) + timedelta(seconds=offset or 0.0)

    def _where(self) -> str:
        """host:port of the API, for people."""
        url = self._http.base_url
        return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"

    def _error_details(self, response: httpx.Response) -> tuple[str, str | None]:
        """The API's Message and RequestId, with any token blotted out."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        message = str(body.get("Message") or response.reason_phrase or "no message")
        for token in self._tokens.values():
            message = message.replace(token, "***")
        request_id = body.get("RequestId") or response.headers.get("Request-Id")
        return message[:500], request_id

    def _count(self, operation: str | None = None, **amounts: float) -> None:
        if operation:
            with self.stats._lock:
                self.stats.requests[operation] += 1
        self.stats.add(**amounts)

    # -- pagination --------------------------------------------------------------------------

    def iter_pages(
        self, operation: str, filters: dict[str, Any], item_schema: pa.Schema | None = None
    ) -> Iterator[Page]:
        """Yield the non-empty pages of a paginated operation, newest first.

        The end is a null cursor or an empty page, never a short page alone: a server that
        filters after paging returns short pages mid-walk (the guideline says a short page
        "implies" the end; it does not promise it). A 408 (or a timeout) halves the page of the
        walk, down to MIN_PAGE_SIZE, and teaches `sizes`, which caps every later request of
        the client: a server that stalls on big pages would otherwise cost a timeout on every
        walk and in every thread.
        More ids than `sizes` allows raise RequestTooHeavyError before anything is sent: the
        caller asks for fewer (`_ask_for_less`). With `item_schema`, a page whose items have
        those fields with those types comes as an Arrow table (see `ArrowPageReader`).
        """
        items_key = ITEMS_KEY[operation]
        arrow_pages = self._arrow_pages(operation, item_schema) if item_schema else None
        ids = len(filters.get(ID_FILTERS[operation]) or ())
        count, cursor = self.page_size, None
        short = False  # the previous page had fewer items than asked for
        while True:
            count = min(count, self.sizes.ceiling)
            if ids > self.sizes.ceiling:
                raise TooManyIdsError(operation, ids, self.sizes.ceiling)
            limitation: dict[str, Any] = {"Count": count}
            if cursor:
                limitation["Cursor"] = cursor
            size = max(count, ids)
            try:
                data = self._post_sized(
                    operation, {**filters, "Limitation": limitation}, arrow_pages, size, ids
                )
            except RequestTooHeavyError:
                if count <= MIN_PAGE_SIZE:
                    raise  # no smaller page to ask for: the caller asks for fewer ids or days
                # This walk asks for half, whatever `sizes` learned of it (it may have taken
                # it for a passing overload); more ids than its ceiling are split above.
                count = max(MIN_PAGE_SIZE, count // 2)
                continue
            if data is None:
                continue  # another request lowered the size while this one waited its turn
            items = data.get(items_key)
            if not isinstance(items, pa.Table) and (
                not isinstance(items, list) or not all(isinstance(i, dict) for i in items)
            ):
                raise MewsResponseError(
                    f"Mews {operation} answered 200 without a '{items_key}' list of objects."
                )
            if not len(items):
                if short:
                    self._count(end_probes=1)  # the request that showed the short page was last
                return
            if short:
                self._count(short_pages=1)  # a short page that was not the last
            yield items
            next_cursor = data.get("Cursor")
            if not next_cursor:
                return
            if next_cursor == cursor:
                raise MewsResponseError(f"Mews {operation} returned the same cursor twice.")
            cursor, short = next_cursor, len(items) < count

    def _post_sized(
        self,
        operation: str,
        payload: dict[str, Any],
        arrow_pages: ArrowPageReader | None,
        size: int,
        ids: int,
    ) -> dict[str, Any] | None:
        """`post` of a request of `size` with `ids` ids, in its turn among large requests (see
        RequestSizes), teaching `sizes` what came of it; None, unsent, when its size is over
        the ceiling once its turn comes."""
        with self.sizes.turn(size) as within:
            if not within:
                return None
            try:
                data = self.post(operation, payload, arrow_pages)
            except RequestTooHeavyError:
                self.sizes.too_heavy(size)  # before the next large request takes its turn
                raise
            items = data.get(ITEMS_KEY[operation])
            carried = len(items) if isinstance(items, list | pa.Table) else 0
            # An answer proves the size of what it carried: a page of 1,000 that held the 18
            # services says nothing of a page of 1,000 orders.
            self.sizes.answered_in_time(max(ids, carried))
            return data

    def _ids_per_request(self) -> int:
        return min(MAX_IDS_PER_REQUEST, self.sizes.ceiling)

    def _arrow_pages(self, operation: str, item_schema: pa.Schema) -> ArrowPageReader:
        """The operation's reader, which keeps what it learned of added fields across walks."""
        reader = self._page_readers.get(operation)
        if reader is None or reader.known is not item_schema:
            reader = ArrowPageReader(ITEMS_KEY[operation], item_schema)
            self._page_readers[operation] = reader
        return reader

    # -- operations --------------------------------------------------------------------------

    def product_service_orders(
        self,
        service_ids: list[str],
        updated_from: datetime,
        updated_to: datetime,
        enterprise_ids: list[str] | None = None,
        item_schema: pa.Schema | None = None,
    ) -> Iterator[Page]:
        """Pages of orders of these services whose UpdatedUtc is in [updated_from, updated_to),
        widened to whole seconds (`whole_seconds`).

        See `_updated_by_service` for the windows; pages already yielded may come again: keep
        one row per order id. `item_schema`: see `iter_pages`.
        """
        return self._updated_by_service(
            ORDERS_OPERATION, service_ids, updated_from, updated_to, enterprise_ids, item_schema
        )

    def order_items(
        self,
        service_ids: list[str],
        updated_from: datetime,
        updated_to: datetime,
        enterprise_ids: list[str] | None = None,
        item_schema: pa.Schema | None = None,
    ) -> Iterator[Page]:
        """Pages of the order items of these services whose own UpdatedUtc is in
        [updated_from, updated_to), walked as `product_service_orders` walks orders.

        Pages already yielded may come again: keep one row per item id. No `Currency` is
        sent: the amounts come in the enterprise's own currency, as booked.
        """
        return self._updated_by_service(
            ORDER_ITEMS_OPERATION, service_ids, updated_from, updated_to, enterprise_ids,
            item_schema,
        )

    def products(
        self, service_ids: list[str], enterprise_ids: list[str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of the products of these services, default products included (items may
        be of one; products/getAll leaves them out unless asked). An empty list of ids asks
        for nothing (no request)."""
        if asks_for_nothing(service_ids, enterprise_ids):
            return
        for filters in id_filters(ServiceIds=service_ids, EnterpriseIds=enterprise_ids):
            yield from self.iter_pages(PRODUCTS_OPERATION, {**filters, "IncludeDefault": True})

    def _updated_by_service(
        self,
        operation: str,
        service_ids: list[str],
        updated_from: datetime,
        updated_to: datetime,
        enterprise_ids: list[str] | None,
        item_schema: pa.Schema | None,
    ) -> Iterator[Page]:
        """Pages of `operation` for these services whose UpdatedUtc is in [updated_from,
        updated_to), widened to whole seconds (`whole_seconds`): any number of service and
        enterprise ids (batches of 1000, `id_filters`) and any interval, sent in
        windows of at most `max_window_days` or else MAX_WINDOW_MONTHS. When even small pages
        are too heavy, a window is halved (down to MIN_WINDOW). An empty list of ids asks for
        nothing (no request); `enterprise_ids=None` is every enterprise of the token.
        """
        if asks_for_nothing(service_ids, enterprise_ids):
            return
        updated_from, updated_to = whole_seconds((updated_from, updated_to))
        for filters in id_filters(EnterpriseIds=enterprise_ids):
            walk = partial(self._updated_in, operation, filters, item_schema)
            yield from self._walk_windows(walk, service_ids, updated_from, updated_to)

    def _walk_windows(
        self,
        walk: Callable[[OrdersPart], Iterator[Page]],
        service_ids: list[str],
        updated_from: datetime,
        updated_to: datetime,
    ) -> Iterator[Page]:
        """`walk` over batches of services (as many as Mews answers in time) and windows of
        [updated_from, updated_to), each window asked for less when it is too heavy."""
        for services in chunked(service_ids, self._ids_per_request()):
            start = updated_from
            while start < updated_to:
                window = (start, min(self.window_end(start), updated_to))
                try:
                    yield from self._ask_for_less(walk, (services, window), self._halve_orders)
                except IntervalTooLongError:
                    # Mews counts "3 months" more strictly than we did. Going straight to the
                    # strictest reading (not first to "< 3 months", then to 90 days) costs at
                    # most one refused request per client: no later window is longer than
                    # any reading allows, so no refused length is ever sent again. The price
                    # is windows of 88 days instead of up to 92 (a few percent more windows).
                    self.max_window_days = MAX_WINDOW_DAYS_STRICTEST
                    self._count(too_long_windows=1)
                    continue  # this window again, shorter
                start = window[1]

    def window_end(self, start: datetime) -> datetime:
        """The end of the longest UpdatedUtc window from `start` this client sends, so that a
        caller's windows need not be split in two after it learned a stricter "3 months"."""
        if self.max_window_days is None:
            return add_months(start, MAX_WINDOW_MONTHS)
        return start + timedelta(days=self.max_window_days)

    def _updated_in(
        self,
        operation: str,
        filters: dict[str, Any],
        item_schema: pa.Schema | None,
        part: OrdersPart,
    ) -> Iterator[Page]:
        services, window = part
        interval = {"StartUtc": format_utc(window[0]), "EndUtc": format_utc(window[1])}
        filters = {"ServiceIds": services, **filters, "UpdatedUtc": interval}
        try:
            yield from self.iter_pages(operation, filters, item_schema)
        except MewsApiError as error:
            # A 400 on an interval within every reading of "3 months" is not about its length.
            too_long = window[1] - window[0] > timedelta(days=MAX_WINDOW_DAYS_STRICTEST)
            if error.status != 400 or not too_long:
                raise
            raise IntervalTooLongError(
                error.operation, error.status, error.api_message, error.request_id
            ) from error

    def _halve_orders(self, part: OrdersPart) -> tuple[OrdersPart, OrdersPart] | None:
        """Halves of the services when they are more than Mews answers in time (learned while
        they were walked), else of the interval."""
        services, window = part
        if len(services) > self.sizes.ceiling and (ids := halve_ids(services)):
            return (ids[0], window), (ids[1], window)
        if (halves := halve_interval(window)) is None:
            return None
        return (services, halves[0]), (services, halves[1])

    def service_order_notes(
        self,
        order_ids: Iterable[str],
        types: Iterable[str] | None = None,
        enterprise_ids: list[str] | None = None,
        item_schema: pa.Schema | None = None,
    ) -> Iterator[Page]:
        """Pages of the notes of these orders, any number of ids (order and enterprise ids),
        in batches of 1000.

        When even small pages are too heavy, the batch of ids is halved; pages already
        yielded for it come again. `item_schema`: see `iter_pages`. An empty list of ids asks
        for nothing (no request).
        """
        if asks_for_nothing(enterprise_ids):
            return
        order_ids = list(order_ids)
        types = list(types or [])
        for filters in id_filters(EnterpriseIds=enterprise_ids):
            if types:
                filters["Types"] = types
            walk = partial(self._notes_of, filters, item_schema)
            for orders in chunked(order_ids, self._ids_per_request()):
                yield from self._ask_for_less(walk, orders, halve_ids)

    def _notes_of(
        self, filters: dict[str, Any], item_schema: pa.Schema | None, order_ids: list[str]
    ) -> Iterator[Page]:
        filters = {"ServiceOrderIds": order_ids, **filters}
        return self.iter_pages(NOTES_OPERATION, filters, item_schema)

    def _ask_for_less(
        self,
        walk: Callable[[Part], Iterator[Page]],
        part: Part,
        halve: Callable[[Part], tuple[Part, Part] | None],
    ) -> Iterator[Page]:
        """The pages of `walk(part)`; when even its smallest page is too heavy (`iter_pages`
        already shrank the page), or it holds more ids than Mews answers in time, the pages of
        each of the two halves `halve(part)` gives, and so on down to where `halve` gives None.
        Pages yielded before a split come again.

        The one place a request asks for less than it did: a 408 says retrying the same
        request is not the fix.
        """
        try:
            yield from walk(part)
        except RequestTooHeavyError:
            halves = halve(part)
            if halves is None:
                raise
            self._count(splits=1)
            for half in halves:
                yield from self._ask_for_less(walk, half, halve)

    def services(
        self, service_ids: list[str] | None = None, enterprise_ids: list[str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of services, all of them (None) or only the given ids (none for [])."""
        if asks_for_nothing(service_ids, enterprise_ids):
            return
        for filters in id_filters(ServiceIds=service_ids, EnterpriseIds=enterprise_ids):
            yield from self.iter_pages(SERVICES_OPERATION, filters)

    def enterprises(
        self, enterprise_ids: list[str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of enterprises (properties): those of the token (None), or the given ids."""
        if asks_for_nothing(enterprise_ids):
            return
        for filters in id_filters(EnterpriseIds=enterprise_ids):
            yield from self.iter_pages(ENTERPRISES_OPERATION, filters)
