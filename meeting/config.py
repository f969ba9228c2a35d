"""Typed configuration: one TOML file, checked strictly, secrets overridable from the environment.

Every key has a default here and is documented in ``config.example.toml``. Loading fails with
one ``ConfigError`` line that names the offending key; callers print it and exit non-zero.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A config file that cannot be used, with a message naming the key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Base of every link the service hands out; set it to the address people reach.
    public_url: str = "http://127.0.0.1:8080"
    tls_cert: str = ""
    tls_key: str = ""
    # Lets anyone who can reach the server mint meetings from the home page and the API.
    allow_web_minting: bool = True
    # Seconds a client has to send a request's headers, from connecting or from its previous
    # response (an idle keep-alive connection closes then too), and to send a request body.
    header_timeout: int = 10
    body_timeout: int = 30
    # Open connections in all (0: half the open-file limit, at most 10000; never more than
    # three quarters of it), and from one client address (an IPv6 /64 counts as one; 0: no
    # per-address limit, as behind a reverse proxy).
    max_connections: int = 0
    max_connections_per_address: int = 100
    # Media worker processes, each hosting whole meetings on its own core: 0 means one per
    # core; 1 keeps everything in one process.
    workers: int = 0
    # "uvloop" (libuv's event loop: cheaper sockets and callbacks on the media path) or
    # "asyncio" (the standard library's).
    event_loop: str = "uvloop"


@dataclass(frozen=True)
class StoreConfig:
    path: str = "data/meetnow.sqlite3"
    # postgresql://user:password@host:port/database: PostgreSQL instead of the SQLite file.
    url: str = ""


@dataclass(frozen=True)
class RecordingsConfig:
    folder: str = "data/recordings"
    retention_days: int = 30
    # Recording refuses to start, and a running one stops, below this much free disk.
    min_free_mb: int = 1024
    # Recordings composed at once (each in its own process).
    compose_workers: int = 1


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...] = ()
    username: str = ""
    credential: str = ""


@dataclass(frozen=True)
class MediaConfig:
    # Addresses the server offers as ICE host candidates; empty means its interface addresses.
    announce_addresses: tuple[str, ...] = ()
    # Networks (CIDR) whose remote candidates the server will use; empty means any address.
    allowed_peer_networks: tuple[str, ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    max_participants: int = 25
    # Live meetings, and people over all of them, this server takes at once.
    max_meetings: int = 200
    max_people: int = 500
    # People who may wait at once in one locked meeting's lobby.
    max_waiting: int = 50


@dataclass(frozen=True)
class TurnConfig:
    # coturn's shared-secret scheme (use-auth-secret / static-auth-secret): every joining page
    # and every server peer gets a username and password derived from ``secret`` that expire.
    urls: tuple[str, ...] = ()
    secret: str = ""
    ttl: int = 3600  # seconds a credential stays valid


@dataclass(frozen=True)
class MetricsConfig:
    # Prometheus text at GET /metrics: off, behind a bearer token, or on an address of its own.
    enabled: bool = False
    token: str = ""
    listen: str = ""  # "host:port"; empty: the main listener (a token is then required)


@dataclass(frozen=True)
class LogConfig:
    format: str = "kv"  # "kv": key=value text lines; "json": one JSON object per line
    level: str = "info"


@dataclass(frozen=True)
class SlackConfig:
    bot_token: str = ""
    signing_secret: str = ""
    app_token: str = ""
    socket_mode: bool = False
    # Show meetings as Slack call cards (Calls API) instead of a message with live status.
    calls: bool = False
    api_url: str = "https://slack.com/api/"


@dataclass(frozen=True)
class DiscordConfig:
    token: str = ""
    application_id: str = ""
    api_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    guild_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    # Redis that several nodes share (empty: this server is alone). Nodes of one cluster
    # also share a PostgreSQL store and the recordings folder.
    redis_url: str = ""
    # This node's name in the cluster (empty: the host name).
    node_id: str = ""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)


# Secrets may stay out of the file: these variables win over it.
SECRET_ENV = {
    "MEETNOW_REDIS_URL": ("cluster", "redis_url"),
    "MEETNOW_SLACK_BOT_TOKEN": ("slack", "bot_token"),
    "MEETNOW_SLACK_SIGNING_SECRET": ("slack", "signing_secret"),
    "MEETNOW_SLACK_APP_TOKEN": ("slack", "app_token"),
    "MEETNOW_DISCORD_TOKEN": ("discord", "token"),
    "MEETNOW_TURN_SECRET": ("turn", "secret"),
    "MEETNOW_METRICS_TOKEN": ("metrics", "token"),
    "MEETNOW_STORE_URL": ("store", "url"),  # a database URL holds its password
}

LOG_FORMATS = ("kv", "json")
EVENT_LOOPS = ("uvloop", "asyncio")
LOG_LEVELS = ("debug", "info", "warning", "error")


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or use the defaults when it is None) and apply secret overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    config = apply_env(parse_config(raw), os.environ if env is None else env)
    check_secrets(config)
    _check_store(config.store)  # the URL may come from the environment
    if config.cluster.redis_url and not config.store.url:
        # Each node would keep its own SQLite file: meetings minted on one unknown to the rest.
        raise ConfigError("config key 'cluster.redis_url' needs 'store.url' (a PostgreSQL store every node shares)")
    return config


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Build a Config from a parsed TOML table, rejecting unknown keys and wrong types."""
    config = _build(Config, raw, "")
    _check(config)
    return config


def apply_env(config: Config, env: Mapping[str, str]) -> Config:
    """Return ``config`` with any ``MEETNOW_*`` secret variables applied."""
    for name, (section, key) in SECRET_ENV.items():
        if env.get(name):
            part = dataclasses.replace(getattr(config, section), **{key: env[name]})
            config = dataclasses.replace(config, **{section: part})
    return config


def check_secrets(config: Config) -> None:
    """Settings that need a secret, checked once the environment had its say."""
    if config.turn.urls and not config.turn.secret:
        raise ConfigError("config key 'turn.secret' must be set when 'turn.urls' is "
                          "(coturn's static-auth-secret; or MEETNOW_TURN_SECRET)")
    metrics = config.metrics
    if metrics.enabled and not metrics.listen and not metrics.token:
        raise ConfigError("config key 'metrics.token' must be set when metrics are served on the "
                          "main listener (or MEETNOW_METRICS_TOKEN, or set 'metrics.listen')")


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a pair; raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        ipaddress.ip_address(host)  # only an IPv6 address may hold colons
    return host, int(port)


def _build(cls: type, table: Any, prefix: str) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    values = {key: _convert(hints[key], value, f"{prefix}{key}") for key, value in table.items()}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, types.UnionType):
        raise TypeError(f"unsupported config type for {key}")
    # bool is an int in Python; a port of `true` is still a mistake.
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}' must be {_type_name(hint)}, not {type(value).__name__}")
    return value


def _type_name(hint: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", float: "a number"}.get(
        hint, hint.__name__
    )


def _check(config: Config) -> None:
    if not 0 < config.server.port < 65536:
        raise ConfigError("config key 'server.port' must be between 1 and 65535")
    if not config.server.public_url.startswith(("http://", "https://")):
        raise ConfigError("config key 'server.public_url' must start with http:// or https://")
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError("config keys 'server.tls_cert' and 'server.tls_key' must be set together")
    for key in ("header_timeout", "body_timeout"):
        if getattr(config.server, key) < 1:
            raise ConfigError(f"config key 'server.{key}' must be at least 1 (seconds)")
    if config.server.event_loop not in EVENT_LOOPS:
        raise ConfigError("config key 'server.event_loop' must be one of: " + ", ".join(EVENT_LOOPS))
    if config.server.workers < 0:
        raise ConfigError("config key 'server.workers' must not be negative (0: one per core)")
    if config.server.max_connections < 0:
        raise ConfigError("config key 'server.max_connections' must not be negative (0: automatic)")
    if config.server.max_connections_per_address < 0:
        raise ConfigError("config key 'server.max_connections_per_address' must not be negative "
                          "(0: no limit)")
    if config.recordings.retention_days < 1:
        raise ConfigError("config key 'recordings.retention_days' must be at least 1")
    if config.recordings.min_free_mb < 0:
        raise ConfigError("config key 'recordings.min_free_mb' must not be negative")
    if config.recordings.compose_workers < 1:
        raise ConfigError("config key 'recordings.compose_workers' must be at least 1")
    if config.media.max_participants < 2:
        raise ConfigError("config key 'media.max_participants' must be at least 2")
    for key in ("max_meetings", "max_people", "max_waiting"):
        if getattr(config.media, key) < 1:
            raise ConfigError(f"config key 'media.{key}' must be at least 1")
    _check_addresses(config.media)
    _check_ops(config)
    _check_store(config.store)


def _check_ops(config: Config) -> None:
    for i, url in enumerate(config.turn.urls):
        if not url.startswith(("turn:", "turns:", "stun:")):
            raise ConfigError(f"config key 'turn.urls[{i}]' must start with turn:, turns: or stun:, "
                              f"not {url!r}")
    if config.turn.ttl < 60:
        raise ConfigError("config key 'turn.ttl' must be at least 60 (seconds)")
    if config.metrics.listen:
        try:
            parse_listen(config.metrics.listen)
        except ValueError:
            raise ConfigError("config key 'metrics.listen' must be host:port, e.g. 127.0.0.1:9100, "
                              f"not {config.metrics.listen!r}") from None
    if config.log.format not in LOG_FORMATS:
        raise ConfigError(f"config key 'log.format' must be one of {', '.join(LOG_FORMATS)}, "
                          f"not {config.log.format!r}")
    if config.log.level not in LOG_LEVELS:
        raise ConfigError(f"config key 'log.level' must be one of {', '.join(LOG_LEVELS)}, "
                          f"not {config.log.level!r}")


def _check_store(store: StoreConfig) -> None:
    # The message never repeats the URL: it may hold a password.
    if store.url and not store.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("config key 'store.url' (or MEETNOW_STORE_URL) must start with postgresql:// "
                          "(or be empty for SQLite)")
    try:
        if "," not in urlsplit(store.url).netloc:  # several hosts (failover) are asyncpg's to check
            urlsplit(store.url).port
    except ValueError:
        raise ConfigError("config key 'store.url' (or MEETNOW_STORE_URL) has a port that is not a number "
                          "from 1 to 65535") from None


def _check_addresses(media: MediaConfig) -> None:
    # Checked here so a typo is one clear line at start, not a failure at every join.
    for i, address in enumerate(media.announce_addresses):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"config key 'media.announce_addresses[{i}]' must be an IP address, "
                              f"not {address!r}") from None
    for i, network in enumerate(media.allowed_peer_networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"config key 'media.allowed_peer_networks[{i}]' must be a network "
                              f"such as 10.0.0.0/8, not {network!r}") from None
