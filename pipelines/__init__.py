"""The runnable pipeline and its CLI."""

import os
import sys

# Arrow reads its default memory pool once, as it is imported: set here, before the pipeline
# imports dlt (which imports pyarrow), so that Arrow's own allocations use the C library's
# malloc too, not only the tables the pipeline allocates (see `share_freed_memory`).
if "pyarrow" not in sys.modules:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
