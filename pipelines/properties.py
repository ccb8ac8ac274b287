"""Properties: one Mews token (one hotel, or a portfolio) each, loaded by a dlt pipeline of its own.

A property's name is its dlt pipeline's name, so it has its own state (watermarks, notes
refresh), working folder and run records, and its settings resolve through dlt's pipeline
sections: `HOTEL_A__SOURCES__MEWS__ACCESS_TOKEN` (or `[hotel_a.sources.mews]` in
`.dlt/secrets.toml`) first, then the plain `SOURCES__MEWS__ACCESS_TOKEN`. No property is the
single pipeline `mews_sync` of earlier releases, so their files and databases go on in place.
"""

from __future__ import annotations

import re
from typing import Any

from pipelines import config
from sources.errors import MewsConfigError

DEFAULT_PIPELINE = "mews_sync"  # no property: the pipeline of every release before properties
# dlt's pipeline names are also section names in settings: lower case keeps them one spelling
# in the environment (HOTEL_A__...) and in TOML ([hotel_a...]).
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def check_property(name: Any, origin: str = "MEWS_SYNC__PROPERTY") -> str:
    """The property name, or a configuration error saying what a name may be."""
    text = str(name).strip() if isinstance(name, str) else name
    if not isinstance(text, str) or not NAME.fullmatch(text) or "__" in text:
        raise MewsConfigError(
            f"{origin} {name!r} is not a property name: use lower-case letters, digits and "
            "single underscores, starting with a letter (e.g. prague_old_town)."
        )
    return text


def configured_property() -> str | None:
    """MEWS_SYNC__PROPERTY (or `property` under [mews_sync]), None when unset."""
    found = config.lookup("mews_sync.property")
    if found is None or found.value in ("", None):
        return None
    return check_property(found.value, found.origin)


def configured_properties() -> list[str | None]:
    """Every property to load: MEWS_SYNC__PROPERTIES (a JSON list, or `properties` under
    [mews_sync]); else the one of MEWS_SYNC__PROPERTY, or the single default pipeline."""
    found = config.lookup("mews_sync.properties")
    if found is None or found.value in ("", None, []):
        return [configured_property()]
    names = found.value
    if isinstance(names, str):
        import json

        try:
            names = json.loads(names)
        except ValueError:
            names = None
    if not isinstance(names, list) or not names:
        raise MewsConfigError(
            f'{found.origin}: mews_sync.properties must be a list of names, e.g. ["prague", '
            '"brno"].'
        )
    checked = [check_property(n, found.origin) for n in names]
    if len(set(checked)) != len(checked):
        raise MewsConfigError(f"{found.origin}: a property is listed twice.")
    return checked


def pipeline_name(property: str | None) -> str:
    """The dlt pipeline of a property (its name), or of the default single property."""
    return property or DEFAULT_PIPELINE
