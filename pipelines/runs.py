"""What a run did: the summary printed at its end and the run record kept for `status`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.failures import EXIT_BUSY
from sources.errors import counted

if TYPE_CHECKING:  # not imported for `status`, which reads run records only: no dlt
    from pipelines.compaction import Compacted
    from sources.mews import SourceStats
    from sources.mews.client import ClientStats

log = logging.getLogger("mews_sync")


def new_client_stats() -> ClientStats:
    from sources.mews.client import ClientStats

    return ClientStats()


def new_source_stats() -> SourceStats:
    from sources.mews import SourceStats

    return SourceStats()


def new_compacted() -> Compacted:
    from pipelines.compaction import Compacted

    return Compacted()


@dataclass
class RunReport:
    """What one run did, for the summary printed at its end and the run record."""

    kind: str
    where: str  # the destination, as a person names it: a file path or a database URL
    property: str | None = None  # the property (its dlt pipeline); None: the default one
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0
    stats: ClientStats = field(default_factory=new_client_stats)
    read: SourceStats = field(default_factory=new_source_stats)
    table_rows: dict[str, int] = field(default_factory=dict)  # rows per table after the run
    removed: Compacted = field(default_factory=new_compacted)  # by the clean-ups after loads
    published: str | None = None  # the analysts' copy as this run left it, for people
    error: str | None = None  # the one-sentence reason a failed run stopped
    exit_code: int | None = None  # set when the run stopped with an error

    def summary(self) -> str:
        requests = sum(self.stats.requests.values())
        per_op = ", ".join(f"{op} {n}" for op, n in sorted(self.stats.requests.items()))
        tables = ", ".join(f"{t} {n}" for t, n in self.table_rows.items())
        read = self.read
        what = f"mews-sync {self.kind}" + (f" of {self.property}" if self.property else "")
        if self.error is None:
            head = f"{what} finished in {self.seconds:.1f} s into {self.where}"
        else:
            # A run that found the destination busy did nothing, by design, as `status` says.
            outcome = "SKIPPED" if self.exit_code == EXIT_BUSY else "FAILED"
            head = f"{what} {outcome} after {self.seconds:.1f} s: {self.error}"
            tables = tables or "not counted (the run did not finish)"
        lines = [
            head,
            f"  read: {counted(read.orders, 'order')} in {counted(read.order_pages, 'page')} "
            f"over {counted(read.windows, 'window')}, {counted(read.notes, 'note')}, "
            f"{counted(read.items, 'order item')}, {counted(read.products, 'product')}",
            f"  rows per table now: {tables or 'none'}",
            f"  requests: {requests} ({per_op or 'none'})",
            f"  retries: {self.stats.retries}, rate-limited (429): {self.stats.throttled}, "
            f"too heavy (408): {self.stats.heavy}",
            f"  waited for the rate limit: {self.stats.limiter_wait_seconds:.1f} s, "
            f"after 429s: {self.stats.throttle_wait_seconds:.1f} s",
            # What Mews does not document, and what it cost this run (README).
            f"  short pages: {self.stats.short_pages} "
            f"(+{counted(self.stats.end_probes, 'end probe')}), "
            f"timeouts: {self.stats.timeouts}, 3-month limit learned: "
            f"{'yes' if self.stats.too_long_windows else 'no'}",
            # Rows read again replace their older copies; a note that is gone from Mews goes.
            f"  removed: older copies of {counted(self.removed.superseded_orders, 'order')} "
            f"and {counted(self.removed.superseded_notes, 'note')} read again; "
            f"{counted(self.removed.deleted_notes, 'note')} deleted in Mews",
        ]
        if (warning := clock_warning(self.stats.mews_clock_offset)) is not None:
            lines.append(f"  {warning}")
        if read.refresh_days:
            lines.append(f"  {refresh_line(read, self.table_rows.get('product_service_orders'))}")
        if self.published:
            lines.append(f"  analysts' copy: {self.published}")
        return "\n".join(lines)

    def record(self, exit_code: int) -> dict[str, Any]:
        """The run as one JSON-able line: counts and the error sentence, never a token."""
        offset = self.stats.mews_clock_offset  # seconds Mews' clock is ahead of this machine's
        return {
            "kind": self.kind,
            "property": self.property,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": (self.started + timedelta(seconds=self.seconds)).isoformat(
                timespec="seconds"
            ),
            "seconds": round(self.seconds, 1),
            # A run that found the destination busy did nothing, by design: `status` says so.
            "status": {0: "ok", EXIT_BUSY: "skipped"}.get(exit_code, "failed"),
            "exit_code": exit_code,
            "error": self.error,
            "windows": self.read.windows,
            "order_pages": self.read.order_pages,
            "orders": self.read.orders,
            "notes": self.read.notes,
            "items": self.read.items,
            "superseded_orders": self.removed.superseded_orders,
            "superseded_notes": self.removed.superseded_notes,
            "deleted_notes": self.removed.deleted_notes,
            "refreshed_orders": self.read.refreshed_orders,
            "refresh_share": round(self.read.refresh_share, 3),
            "requests": sum(self.stats.requests.values()),
            "retries": self.stats.retries,
            "throttled": self.stats.throttled,
            "short_pages": self.stats.short_pages,
            "end_probes": self.stats.end_probes,
            "timeouts": self.stats.timeouts,
            "too_long_windows": self.stats.too_long_windows,
            "mews_clock_offset": offset if offset is None else round(offset, 1),
            "table_rows": self.table_rows,
        }


# Within this, a clock is taken as right: the Date header alone is off by up to a second and
# an answer's trip, and NTP keeps clocks within milliseconds.
CLOCK_SKEW_WARNING_SECONDS = 60


def clock_warning(mews_clock_offset: float | None) -> str | None:
    """The line saying this machine's clock is off from Mews' (offset: seconds Mews' clock is
    ahead), or None within a minute or when Mews sent no Date header."""
    if mews_clock_offset is None or abs(mews_clock_offset) <= CLOCK_SKEW_WARNING_SECONDS:
        return None
    minutes = round(abs(mews_clock_offset) / 60, 1)
    side = "ahead of" if mews_clock_offset < 0 else "behind"
    return (
        f"WARNING: this machine's clock is {minutes:g} minutes {side} Mews' clock; the windows "
        "follow Mews' clock, but fix this machine's time sync (NTP)"
    )


def refresh_line(read: SourceStats, stored_orders: int | None) -> str:
    """Where the notes refresh stands, and what it costs a day, in one line."""
    ranges = ", ".join(f"{a[:10]}..{b[:10]}" for a, b in read.refresh_ranges) or "none"
    line = (
        f"notes refresh (every {counted(read.refresh_days, 'day', 'g')}): re-read "
        f"{counted(read.refreshed_orders, 'order')} updated {ranges}; "
        f"{read.refresh_share:.0%} of the history swept this cycle"
    )
    if stored_orders:
        # Each 1000 orders re-read cost an orders request and a notes request (plus pages).
        per_day = 2 * stored_orders / 1000 / read.refresh_days
        line += f"; about {counted(per_day, 'request', '.0f')} a day"
    return line


def record_run(path: Path, report: RunReport, exit_code: int) -> None:
    """Append the run to the run records at `path` for `mews-sync status`.

    A file beside the DuckDB file rather than a table in it: the record matters most when the
    destination is locked by another run or damaged, a rejected run leaves the DuckDB file
    byte for byte as it was, and `tail` reads it without DuckDB. One short line appended in
    one write, so runs that finish together do not mix their lines.
    """
    line = json.dumps(report.record(exit_code)) + "\n"
    try:
        # PostgreSQL's records live in dlt's working folder, which a run that could not
        # connect never made: its failure must be recorded all the same.
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as exc:
        log.warning("could not record this run in %s: %s", path, exc.strerror or exc)


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The run records at `path`, oldest first; a torn or foreign line is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    runs = []
    for line in lines:
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict) and "status" in run:
            runs.append(run)
    return runs
