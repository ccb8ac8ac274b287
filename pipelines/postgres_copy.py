"""dlt's PostgreSQL destination, with Arrow tables loaded by COPY of csv files exactly.

dlt 1.31 writes the source's Arrow tables into PostgreSQL as csv files (its only writer of
Arrow for PostgreSQL without the ADBC driver) and loads them with COPY ... FORCE_NULL on every
nullable column, which turns an empty text into NULL; a text holding a NUL byte, which
PostgreSQL cannot store, makes COPY fail, and dlt retries the load until it gives up. Arrow's
csv writer quotes every text and writes NULL as nothing, so a COPY without FORCE_NULL keeps
the two apart; NUL bytes are left out, as dlt's INSERT statements leave them out.

Only csv written from Arrow tells NULL from empty text: Python's csv writer (dlt's for rows
given as dicts) writes both as "". So csv is asked for the source's tables (all Arrow), and
dlt's own rows (the pipeline's state) keep dlt's INSERT statements.
"""

from __future__ import annotations

import csv
from typing import IO, Any

from dlt.common.destination.client import HasFollowupJobs, LoadJob, RunnableLoadJob
from dlt.common.destination.typing import PreparedTableSchema
from dlt.common.storages.file_storage import FileStorage
from dlt.common.storages.load_storage import ParsedLoadJobFileName
from dlt.destinations import postgres
from dlt.destinations.impl.postgres.postgres import PostgresClient

from pipelines.storage import POSTGRES_ARROW_FILE_FORMAT

# What COPY reads at a time: dlt's 8 KiB cost a Python call per 8 KiB of a file of 100s of MB.
COPY_CHUNK_BYTES = 1 << 20


class ExactCsvCopyJob(RunnableLoadJob, HasFollowupJobs):
    """COPY a csv file written from Arrow into its table: NULL stays NULL, "" stays ""."""

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._job_client: PostgresClient = None  # type: ignore[assignment]  # set by dlt

    def run(self) -> None:
        sql_client = self._job_client.sql_client
        table = sql_client.make_qualified_table_name(self.load_table_name)
        with FileStorage.open_zipsafe_ro(self._file_path, "rb") as file:
            header = next(csv.reader([file.readline().decode("utf-8")]), [])
            if not header:
                return  # an empty file: nothing to load
            columns = ", ".join(sql_client.escape_column_name(name) for name in header)
            # In CSV, NULL is an unquoted empty value; a quoted one is an empty text.
            copy = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')"
            native = sql_client.native_connection
            with sql_client.begin_transaction(), native.cursor() as cursor:
                cursor.copy_expert(copy, WithoutNul(file), size=COPY_CHUNK_BYTES)


class WithoutNul:
    """A binary file read without its NUL bytes (in UTF-8 a 0 byte is only ever U+0000)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    def read(self, size: int = -1) -> bytes:
        while chunk := self.file.read(size):
            if kept := chunk.replace(b"\0", b""):
                return kept
        return b""


class ExactPostgresClient(PostgresClient):
    def create_load_job(
        self, table: PreparedTableSchema, file_path: str, load_id: str, restore: bool = False
    ) -> LoadJob:
        if ParsedLoadJobFileName.parse(file_path).file_format == "csv":
            return ExactCsvCopyJob(file_path)
        return super().create_load_job(table, file_path, load_id, restore)


class exact_postgres(postgres):  # noqa: N801 - dlt names destination factories in lower case
    """dlt's `postgres` destination (same settings, same name in its configuration), loading
    csv exactly; no parquet (dlt's ADBC job, not checked here)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("destination_name", "postgres")
        super().__init__(*args, **kwargs)

    def _raw_capabilities(self) -> Any:
        caps = super()._raw_capabilities()
        caps.supported_loader_file_formats = ["insert_values", POSTGRES_ARROW_FILE_FORMAT]
        caps.loader_file_format_selector = None
        return caps

    @property
    def client_class(self) -> type[PostgresClient]:
        return ExactPostgresClient
