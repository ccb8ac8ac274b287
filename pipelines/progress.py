"""Progress of a long run: a bar on a terminal, a plain log line now and then elsewhere (cron)."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

from sources.mews import SourceStats
from sources.mews.client import ClientStats

log = logging.getLogger("mews_sync.progress")

BAR_WIDTH = 10


class Progress:
    """Renders the source's and client's counters while a run goes on.

    On a terminal it redraws one line on `stream` every `interval` seconds; otherwise it logs
    an INFO line every `log_every` seconds, so a short run under cron logs nothing extra.
    The counters are only read here, so a slow terminal never slows the sync.
    """

    def __init__(
        self,
        read: SourceStats,
        stats: ClientStats,
        stream: TextIO | None = None,
        interval: float = 0.5,
        log_every: float = 30.0,
    ):
        self.read, self.stats = read, stats
        self.stream = stream or sys.stderr
        self.interval, self.log_every = interval, log_every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mews-progress", daemon=True)
        self._started = time.monotonic()
        self._clear = _ClearLine(self.stream)

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.tty:
            # A log line written while the bar is drawn would land at its end: clear it first.
            for handler in self._same_stream_handlers():
                handler.addFilter(self._clear)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty:
            for handler in self._same_stream_handlers():
                handler.removeFilter(self._clear)
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def line(self, width: int | None = None) -> str:
        """The counters in one line: the bar, windows of the total, pages, rows, requests,
        waits; with `width`, as many of them as fit, whole.

        The bar measures the windows' time span, recent days weighing more (orders mostly sit
        in recent windows; see `window_work`), else the windows' count.
        """
        read, stats = self.read, self.stats
        total = max(read.windows_total, read.windows)
        if read.work_total:
            done = min(1.0, read.work_done / read.work_total)
        else:
            done = read.windows / total if total else 0.0
        filled = int(done * BAR_WIDTH)  # full only when done
        requests = sum(dict(stats.requests).values())  # a copy: other threads add keys
        since = stats.waiting_since
        waiting = time.monotonic() - since if since is not None else None
        waited = stats.limiter_wait_seconds + stats.throttle_wait_seconds + (waiting or 0.0)
        elapsed = int(time.monotonic() - self._started)
        head = (
            f"{elapsed // 60}:{elapsed % 60:02d} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{done:4.0%}"
        )
        # Most telling first: what does not fit a narrow terminal is left out from the end. A
        # wait under way comes first: a line that does not move says why.
        fields = [f"waiting for the rate limit {waiting:.0f} s"] if waiting is not None else []
        fields += [
            f"windows {read.windows}/{total or '?'}",
            f"pages {read.order_pages}",
            f"orders {read.orders:,}",
            f"notes {read.notes:,}",
            f"requests {requests:,}",
            f"429s {stats.throttled}",
            f"retries {stats.retries}",
            f"rate-limit waits {waited:.0f} s",  # done and under way
        ]
        line = head
        for number, field in enumerate(fields):
            longer = f"{line}{' ' if number == 0 else ', '}{field}"
            if width is not None and len(longer) > width:
                break
            line = longer
        return line if width is None or len(line) <= width else line[:width].rsplit(" ", 1)[0]

    def _same_stream_handlers(self) -> list[logging.Handler]:
        handlers = logging.getLogger().handlers
        return [h for h in handlers if getattr(h, "stream", None) is self.stream]

    def _loop(self) -> None:
        last_log = time.monotonic()
        while not self._stop.wait(self.interval):
            if self.tty:
                self._draw()
            elif time.monotonic() - last_log >= self.log_every:
                last_log = time.monotonic()
                log.info("progress: %s", self.line())

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r" + self.line(width) + "\x1b[K")
        self.stream.flush()


class _ClearLine(logging.Filter):
    """Erases the progress line before a log record is written to the same terminal."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        self.stream.write("\r\x1b[K")
        return True
