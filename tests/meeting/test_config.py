import re
from pathlib import Path

import pytest

from meeting.config import Config, ConfigError, IceServer, load_config, parse_config

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def test_defaults_without_a_file() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.server.port == 8080
    assert config.recordings.retention_days == 30
    assert config.media.ice_servers == ()


def test_example_file_documents_every_key_with_its_default() -> None:
    assert load_config(EXAMPLE, env={}) == Config()
    text = EXAMPLE.read_text()
    for section in ("server", "store", "recordings", "media", "slack", "discord", "turn", "metrics", "log"):
        for key in getattr(Config(), section).__dataclass_fields__:
            pattern = rf"^# \[\[{section}\.{key}\]\]" if key == "ice_servers" else rf"^{key} ="
            assert re.search(pattern, text, re.M), f"{section}.{key} undocumented"
    for key in IceServer.__dataclass_fields__:
        assert re.search(rf"^# {key} =", text, re.M), f"media.ice_servers.{key} undocumented"


def test_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[server]\nport = 9000\npublic_url = "https://meet.example.org"\n'
        '[media]\nannounce_addresses = ["203.0.113.5"]\n'
        '[[media.ice_servers]]\nurls = ["turn:t.example.org"]\nusername = "u"\ncredential = "c"\n'
    )
    config = load_config(path, env={})
    assert config.server.port == 9000
    assert config.server.public_url == "https://meet.example.org"
    assert config.media.announce_addresses == ("203.0.113.5",)
    assert config.media.ice_servers == (IceServer(("turn:t.example.org",), "u", "c"),)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[server]\nprot = 1\n", "unknown config key 'server.prot'"),
        ("[sever]\n", "unknown config key 'sever'"),
        ('[server]\nport = "80"\n', "config key 'server.port' must be an integer, not str"),
        ("[server]\nport = true\n", "config key 'server.port' must be an integer, not bool"),
        ("[server]\nport = 70000\n", "server.port"),
        ('[server]\npublic_url = "meet.example.org"\n', "server.public_url"),
        ('[server]\ntls_cert = "a.pem"\n', "server.tls_cert"),
        ('[media]\nannounce_addresses = "1.2.3.4"\n', "config key 'media.announce_addresses' must be a list"),
        ("[media]\nannounce_addresses = [1]\n", "config key 'media.announce_addresses[0]' must be a string"),
        ("[[media.ice_servers]]\nurl = 'x'\n", "unknown config key 'media.ice_servers[0].url'"),
        ("server = 1\n", "config key 'server' must be a table"),
        ("[recordings]\nretention_days = 0\n", "recordings.retention_days"),
        ("[server]\nheader_timeout = 0\n", "'server.header_timeout' must be at least 1"),
        ("[server]\nbody_timeout = 2.5\n", "'server.body_timeout' must be an integer, not float"),
        ('[server]\nevent_loop = "trio"\n', "'server.event_loop' must be one of: uvloop, asyncio"),
        ("[server]\nmax_connections = -1\n", "'server.max_connections' must not be negative"),
        ("[server]\nmax_connections_per_address = -5\n", "'server.max_connections_per_address'"),
        ('[media]\nannounce_addresses = ["vm.example.org"]\n', "'media.announce_addresses[0]' must be an IP address"),
        ('[media]\nallowed_peer_networks = ["10.0.0.0/33"]\n', "'media.allowed_peer_networks[0]' must be a network"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_malformed_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[slack]\nbot_token = "from-file"\n')
    config = load_config(
        path, env={"MEETNOW_SLACK_BOT_TOKEN": "xoxb-env", "MEETNOW_DISCORD_TOKEN": "d"}
    )
    assert config.slack.bot_token == "xoxb-env"
    assert config.discord.token == "d"
    assert parse_config({}).slack.bot_token == ""


def test_the_store_url_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    from meeting.store import make_store
    from meeting.store.postgres import PostgresStore
    from meeting.store.sqlite import SqliteStore

    assert isinstance(make_store(load_config(None, env={}).store), SqliteStore)
    path = tmp_path / "c.toml"
    path.write_text('[store]\nurl = "postgresql://meetnow@db.example.org/meetnow"\n')
    store = make_store(load_config(path, env={}).store)
    assert isinstance(store, PostgresStore) and store.url == "postgresql://meetnow@db.example.org/meetnow"
    secret = "postgresql://meetnow:hunter2@db.example.org:5433/meetnow?password=hunter2&sslmode=require"
    store = make_store(load_config(path, env={"MEETNOW_STORE_URL": secret}).store)
    assert isinstance(store, PostgresStore) and store.url == secret
    assert store.where == "postgresql://meetnow@db.example.org:5433/meetnow?sslmode=require"


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/meetnow", "postgresql://u:hunter2@db:port/x",
                                 "postgresql://u:hunter2@db:99999/x", "data/meetnow.sqlite3"])
def test_a_store_url_that_cannot_work_is_refused_without_repeating_it(tmp_path: Path, url: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[store]\nurl = "{url}"\n')
    for source, env in ((path, {}), (None, {"MEETNOW_STORE_URL": url})):
        with pytest.raises(ConfigError, match="'store.url'") as error:
            load_config(source, env=env)
        assert "hunter2" not in str(error.value) and url not in str(error.value)
