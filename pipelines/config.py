"""The few settings mews-sync reads before dlt, or without it: where the data goes and how much
to log. `status`, `query` and `--help` never import dlt (about 1 s on start-up).

Looked up as dlt looks them up (`dlt.config.get("mews_sync.destination")`): the environment
(`MEWS_SYNC__DESTINATION`), then `secrets.toml`, then `config.toml`, each first in the
project's settings folder (`.dlt/` in DLT_PROJECT_DIR, else in the current folder), then in
dlt's global folder. The sources' own settings are dlt's to resolve.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sources.errors import MewsConfigError

SETTINGS_FILES = ("secrets.toml", "config.toml")  # dlt's order: secrets first


@dataclass(frozen=True)
class Setting:
    value: Any
    base: Path  # where a relative path in the value starts: the project folder of its file
    origin: str  # the environment variable or the file, for people


def project_dir() -> Path:
    """The folder that holds `.dlt/`: DLT_PROJECT_DIR, else the current folder."""
    return Path(os.environ.get("DLT_PROJECT_DIR") or ".").absolute()


def settings_dir() -> Path:
    return project_dir() / os.environ.get("DLT_CONFIG_FOLDER", ".dlt")


def global_dir() -> Path:
    """dlt's global folder, as `dlt.common.runtime.run_context.global_dir()` finds it."""
    import tempfile

    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/dlt")
    home = os.path.expanduser("~")
    if not home or not _writable(home):
        return Path(tempfile.gettempdir()) / "dlt"
    dot_dlt = os.environ.get("DLT_CONFIG_FOLDER", ".dlt")
    if "XDG_DATA_HOME" in os.environ:
        if not os.path.isdir(os.path.join(home, dot_dlt)):
            return Path(os.environ["XDG_DATA_HOME"]) / "dlt"
        import warnings

        warnings.warn(
            f"XDG_DATA_HOME is set to {os.environ['XDG_DATA_HOME']} but ~/.dlt already exists. "
            "Using ~/.dlt",
            stacklevel=2,
        )
    return Path(home) / dot_dlt


def _writable(path: str) -> bool:
    import tempfile

    try:
        if not os.path.exists(path):
            return False
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def data_dir() -> Path:
    """dlt's data folder: DLT_DATA_DIR, else its global folder."""
    return Path(os.environ["DLT_DATA_DIR"]) if "DLT_DATA_DIR" in os.environ else global_dir()


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's content ({} when it does not exist); a syntax error is a configuration
    error naming the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise MewsConfigError(f"Cannot read {path}: {reason}.") from None
    import tomllib  # only when there is a file: some 20 ms

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MewsConfigError(f"{path} is not valid TOML: {exc}; fix that line.") from None


def check_settings_files() -> None:
    """Raise the sentence for the first settings file that is not valid TOML, if any: dlt's
    own error for it is a long traceback that names no line of the file."""
    for folder in (settings_dir(), global_dir()):
        for name in SETTINGS_FILES:
            read_toml(folder / name)


def lookup(key: str) -> Setting | None:
    """The value of a dotted key (`mews_sync.destination`), as dlt would find it, or None."""
    env = "__".join(key.split(".")).upper()
    if env in os.environ:
        return Setting(os.environ[env], Path.cwd(), env)
    folders = ((settings_dir(), project_dir()), (global_dir(), global_dir()))
    for name in SETTINGS_FILES:
        for folder, base in folders:
            node: Any = read_toml(folder / name)
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                return Setting(node, base, str(folder / name))
    return None


def value(key: str) -> Any:
    found = lookup(key)
    return None if found is None else found.value


def path_setting(key: str) -> Path | None:
    """A file named by a setting, a relative one resolved against the project folder when it
    comes from a settings file (the current folder when it comes from the environment)."""
    found = lookup(key)
    if found is None or found.value in ("", None):
        return None
    text = found.value
    if isinstance(text, dict):  # dlt's credentials written as a table
        text = text.get("database")
    if not isinstance(text, str):
        raise MewsConfigError(f"{found.origin}: {key} must be a file path, not {text!r}.")
    path = Path(text).expanduser()
    return path if path.is_absolute() else found.base / path
