"""Where the client keeps its settings (server URL, token) and its outbox.

Settings live in ``$XDG_CONFIG_HOME/agentvine/config.json`` (0600: the file
holds a bearer token), the outbox in ``$XDG_DATA_HOME/agentvine/outbox.sqlite3``.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"
OUTBOX_FILE = "outbox.sqlite3"

ERR_NOT_LOGGED_IN = "not logged in: run 'agentvine login --server URL --token TOKEN'"
ERR_BAD_CONFIG = "config file {path} is unreadable: {reason}"


class ConfigError(Exception):
    pass


def _base(env_name, fallback):
    value = os.environ.get(env_name)
    return Path(value) if value else Path.home() / fallback


def config_dir():
    return _base("XDG_CONFIG_HOME", ".config") / "agentvine"


def data_dir():
    return _base("XDG_DATA_HOME", ".local/share") / "agentvine"


def config_path():
    return config_dir() / CONFIG_FILE


def outbox_path():
    return data_dir() / OUTBOX_FILE


@dataclass(frozen=True)
class Settings:
    server: str
    token: str


def settings_load():
    path = config_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(ERR_NOT_LOGGED_IN) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(ERR_BAD_CONFIG.format(path=path, reason=exc)) from None
    if not isinstance(raw, dict) or not raw.get("server") or not raw.get("token"):
        raise ConfigError(ERR_NOT_LOGGED_IN)
    return Settings(server=raw["server"], token=raw["token"])


def settings_save(settings):
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config_path()
    tmp = path.with_suffix(".tmp")
    # Created 0600 from the start (not chmod-ed afterwards) so the token is
    # never readable by others, not even for a moment; replaced atomically.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"server": settings.server, "token": settings.token}, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
