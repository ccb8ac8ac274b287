"""Exit codes, and the one safe sentence for each expected failure, however deeply dlt wrapped
it. Shared by the command line and the run records."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.lock import SyncBusyError
from pipelines.storage import DUCKDB_LOAD_CONFIG
from sources.errors import MewsApiError, MewsConfigError, MewsError, MewsResponseError
from sources.stop import RunStopped

EXIT_OK, EXIT_BUG, EXIT_CONFIG, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted; the next run starts from the last completed load."


def explain(exc: BaseException) -> tuple[int, str]:
    """The exit code and one safe sentence for an exception."""
    missing, uncoerced, unreadable = dlt_config_errors()
    for cause in causes(exc):
        # dlt wraps one that stops a step; a thread whose wait a stop ended raises RunStopped.
        if isinstance(cause, KeyboardInterrupt | RunStopped):
            return EXIT_INTERRUPTED, INTERRUPTED
        if isinstance(cause, MewsConfigError):
            return EXIT_CONFIG, str(cause)
        if isinstance(cause, MewsError):
            if isinstance(cause, SyncBusyError):
                return EXIT_BUSY, str(cause)
            if isinstance(cause, MewsResponseError) or (
                isinstance(cause, MewsApiError) and not cause.transient
            ):
                return EXIT_REFUSED, str(cause)
            return EXIT_UNAVAILABLE, str(cause)
        if isinstance(cause, unreadable):  # dlt's: a settings file that is not TOML
            return EXIT_CONFIG, broken_settings_file(cause)
        if isinstance(cause, missing):
            names = ", ".join(f"SOURCES__MEWS__{f.upper()}" for f in cause.fields)
            return EXIT_CONFIG, (
                f"missing configuration: set {names} (environment) or put them under "
                "[sources.mews] in .dlt/secrets.toml / .dlt/config.toml."
            )
        if isinstance(cause, uncoerced):
            hint = getattr(cause.hint, "__name__", cause.hint)
            example = "a JSON list of ids" if "list" in str(hint) else "a number"
            return EXIT_CONFIG, (
                f"SOURCES__MEWS__{cause.field_name.upper()} has a value of the wrong type: "
                f"expected {hint}, e.g. {example}."
            )
        if raised_by(cause, "duckdb") and type(cause).__name__ == "OutOfMemoryException":
            return EXIT_UNAVAILABLE, out_of_memory(str(cause))
        if "Could not read enough bytes from file" in str(cause):  # DuckDB's, mid-query
            return EXIT_CONFIG, truncated_file(str(cause))
        if "Could not set lock on file" in str(cause) and raised_by(cause, "duckdb", "dlt"):
            # Another process opened the DuckDB file after the run's own check: DuckDB's
            # _duckdb.IOException, wrapped by dlt (DestinationConnectionError, then
            # PipelineStepFailed, whose text has DuckDB's).
            return EXIT_BUSY, opened_during_run(str(cause))
    return EXIT_BUG, str(exc)


def dlt_config_errors() -> tuple[tuple[type[BaseException], ...], ...]:
    """dlt's configuration errors (a missing value, one of the wrong type, a settings file it
    could not read), or nothing to match when dlt was never imported (`status`, `query`): an
    error cannot come from it then, and importing it would cost a second."""
    if "dlt" not in sys.modules:
        return (), (), ()
    from dlt.common.configuration.exceptions import (
        ConfigFieldMissingException,
        ConfigValueCannotBeCoercedException,
    )
    from dlt.common.configuration.providers.toml import TomlProviderReadException

    return (
        (ConfigFieldMissingException,),
        (ConfigValueCannotBeCoercedException,),
        (TomlProviderReadException,),
    )


def broken_settings_file(error: BaseException) -> str:
    """The sentence for a settings file dlt could not read: the file and the line, found
    again with Python's own TOML reader (dlt's message names neither)."""
    from pipelines.config import read_toml

    for path in getattr(error, "full_paths", []):
        try:
            read_toml(Path(path))
        except MewsConfigError as found:
            return str(found)
    first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return f"A .dlt settings file could not be read ({first}): fix it."


def raised_by(exc: BaseException, *packages: str) -> bool:
    """Whether `exc` is one of these packages' own (DuckDB's are `_duckdb.*`)."""
    return type(exc).__module__.split(".")[0].lstrip("_") in packages


def opened_during_run(message: str) -> str:
    """The sentence for a DuckDB file another process opened while the run was writing it.
    What the run extracted stays pending in dlt's working folder; the next run loads it
    first (`mews_pipeline.load`)."""
    import re

    found = re.search(r'lock on file "([^"]+)"', message)
    where = found.group(1) if found else "the DuckDB file"
    return (
        f"Another process opened {where} during the run (a BI tool, a notebook, `duckdb "
        "-readonly`?): close it and run again, which loads what this run read; analysts "
        "should read the analytics copy instead."
    )


def out_of_memory(message: str) -> str:
    """The sentence for DuckDB running out of its memory limit (or the machine's) in a load
    or a clean-up. What the run read stays pending, and the next run loads it first."""
    first = message.strip().splitlines()[0] if message.strip() else "out of memory"
    return (
        f"DuckDB ran out of memory while writing the file ({first}): run again, which loads "
        "what this run read; if it happens again, raise MEWS_SYNC__DUCKDB_MEMORY_LIMIT "
        f"(default {DUCKDB_LOAD_CONFIG['memory_limit']}), e.g. to 512MB."
    )


def truncated_file(message: str) -> str:
    """The sentence for a DuckDB file that ended before a block a query read (the checks
    before a run or a read find most such files first)."""
    import re

    from pipelines.storage import damaged

    found = re.search(r'from file "([^"]+)"', message)
    path = Path(found.group(1)) if found else Path("The DuckDB file")
    return str(damaged(path, "truncated: a block it needs is missing"))


def causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def run_error(exc: BaseException) -> tuple[int, str]:
    """The exit code and the sentence a run record keeps: a bug's message could hold
    anything, so only its type is kept (the traceback has the details)."""
    code, sentence = explain(exc)
    if code == EXIT_BUG:
        sentence = f"unexpected {type(causes(exc)[-1]).__name__} (a bug; see the traceback)"
    return code, sentence
