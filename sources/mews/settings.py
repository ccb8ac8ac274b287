"""Constants of the Mews Connector API and the defaults of this source, in one place."""

from datetime import timedelta

API_PATH = "/api/connector/v1"
DEMO_PLATFORM_URL = "https://api.mews-demo.com"
PRODUCTION_PLATFORM_URL = "https://api.mews.com"

ORDERS_OPERATION = "productServiceOrders/getAll"
NOTES_OPERATION = "serviceOrderNotes/getAll"
SERVICES_OPERATION = "services/getAll"
ENTERPRISES_OPERATION = "enterprises/getAll"
ORDER_ITEMS_OPERATION = "orderItems/getAll"
PRODUCTS_OPERATION = "products/getAll"

# Response keys holding the items of each paginated operation.
ITEMS_KEY = {
    ORDERS_OPERATION: "ProductServiceOrders",
    NOTES_OPERATION: "ServiceOrderNotes",
    SERVICES_OPERATION: "Services",
    ENTERPRISES_OPERATION: "Enterprises",
    ORDER_ITEMS_OPERATION: "OrderItems",
    # products/getAll also answers "CustomerProducts" ("products offered specifically to
    # customers"; the documentation's sample repeats a product of Products there): not read.
    PRODUCTS_OPERATION: "Products",
}

PAGE_SIZE = 1000  # Limitation.Count maximum
MAX_IDS_PER_REQUEST = 1000  # every id list in a request
# Orders per item handed to dlt: its cost is per item, not per row (5 pages per item took the
# extraction of 200,000 orders from 6.2 to 5.5 s of CPU).
ORDERS_PER_ITEM = 5000
MIN_PAGE_SIZE = 10  # below this a 408 is not the page size's fault
MAX_WINDOW_MONTHS = 3  # UpdatedUtc interval maximum, as documented
# The same maximum under the strictest plausible reading of "3 months". Three calendar months
# last 89 to 92 days (89 from a start between 31 Jan and 28 Feb of a year without 29 Feb), so
# "<= 3 calendar months", "< 3 calendar months" and "<= 90 days" all accept 88 days from any
# start, with a day to spare; 89 days is refused by "< 3 months" from 1 Feb 2023.
MAX_WINDOW_DAYS_STRICTEST = 88
MIN_WINDOW = timedelta(minutes=1)
# One load's worth: bounds what a killed run loses. At least three DuckDB row groups (3 x
# 122,880 rows): a smaller append leaves row groups that DuckDB's next checkpoint merges with
# the previous step's last one, writing the step twice (0.8 s of CPU per 250,000 orders).
MAX_ORDERS_PER_LOAD = 400_000
# ... and at most about this many seconds of fetching: what a killed run loses (SIGKILL, or a
# stop by SIGTERM or Ctrl-C). Each step costs its normalize and load (1.3 to 2 s for a small
# step on DuckDB, measured on the 2-core machine) and 4 requests (services, enterprises).
MAX_SECONDS_PER_LOAD = 60.0

DEFAULT_CLIENT = "mews-sync 0.1.0"
# Mews started in 2012: nothing can be older, and empty windows cost one request each.
DEFAULT_START_DATE = "2012-01-01T00:00:00Z"
DEFAULT_OVERLAP = timedelta(minutes=5)
# Every documented note type (the serviceOrderNotes page, 2026-08); without `Types` the API
# returns only General and ChannelManager notes. Other types are sent with a warning.
DEFAULT_NOTE_TYPES = ("General", "ChannelManager", "SpecialRequest")
# Every order's notes are re-read at least this often, in case a note change does not bump
# its order's UpdatedUtc (undocumented); 0 turns the refresh off. See refresh.py.
DEFAULT_NOTES_REFRESH_DAYS = 7.0

RATE_LIMIT_REQUESTS = 200  # per AccessToken ...
RATE_LIMIT_SECONDS = 30.0  # ... per sliding window
# After a 429 the client-side limit halves (429s that arrive while the pause they caused is
# still on count once) and each answered request gives back a tenth of a request per window:
# from 100 back to 200 takes 1,000 requests, about 5 minutes at 100 / 30 s.
RATE_DECREASE_FACTOR = 0.5
RATE_RECOVERY_PER_SUCCESS = 0.1
# A 429 asking to wait longer than this stops the run (exit 4, try again later) instead of
# holding it, and a lock or a systemd timer, for that long.
MAX_RETRY_AFTER_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 60.0
MAX_RETRIES = 8
# A run's first request that cannot connect (a name that does not resolve, a timeout) is
# retried this often within a few seconds, then stops: before the API has answered at all, a
# wrong address is likelier than an outage. A refused connection is not retried.
FIRST_CONTACT_RETRIES = 2
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0

# services/getAll: current responses discriminate with Data.Discriminator, older ones with Type.
PRODUCT_SERVICE_DISCRIMINATOR = "Additional"
LEGACY_SERVICE_TYPES = {"Orderable": "Additional", "Reservable": "Bookable"}

# A request size learned from timeouts or 408s (see sizes.py) is probed again at the full size
# after this long: one request, so a slow day costs at most one timeout a day afterwards, and
# does not cap a hotel for good.
REQUEST_SIZE_PROBE_AFTER = timedelta(days=1)
