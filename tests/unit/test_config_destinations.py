"""C-MOVE destinations in the configuration: ``[[destinations]]`` and sources with host/port."""

from __future__ import annotations

from pathlib import Path

import pytest

from vna.config import DestinationSettings, load_settings
from vna.errors import ConfigError

SOURCE = '[[sources]]\nname = "HOSP1"\nae_titles = ["HOSP1PACS", "HOSP1CT"]\n'
SOURCE_WITH_ADDRESS = SOURCE + 'host = "10.1.0.5"\nport = 104\n'
VIEWER = '[[destinations]]\nname = "viewer"\nae_title = "VIEWER"\nhost = "10.9.0.2"\nport = 11113\n'


def load(tmp_path: Path, text: str):
    path = tmp_path / "vna.toml"
    path.write_text(text)
    return load_settings(path, environ={})


def test_destinations_are_read(tmp_path: Path) -> None:
    s = load(tmp_path, VIEWER)
    assert s.destinations == (
        DestinationSettings(name="viewer", ae_title="VIEWER", host="10.9.0.2", port=11113),
    )
    assert s.move_destination("VIEWER") == ("10.9.0.2", 11113)


def test_a_source_with_host_and_port_is_a_destination_under_each_of_its_ae_titles(
    tmp_path: Path,
) -> None:
    s = load(tmp_path, SOURCE_WITH_ADDRESS + VIEWER)
    assert s.move_destination("HOSP1PACS") == ("10.1.0.5", 104)
    assert s.move_destination("HOSP1CT") == ("10.1.0.5", 104)
    assert s.move_destination("VIEWER") == ("10.9.0.2", 11113)


def test_unknown_and_address_less_ae_titles_are_not_destinations(tmp_path: Path) -> None:
    s = load(tmp_path, SOURCE + VIEWER)
    assert s.move_destination("HOSP1PACS") is None  # a source without host and port
    assert s.move_destination("STRANGER") is None


def test_no_destinations_by_default() -> None:
    s = load_settings(None, environ={})
    assert s.destinations == ()
    assert s.move_destination("ANY") is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[destinations]]\nae_title = "V"\nhost = "h"\nport = 1\n', "destinations[0].name"),
        ('[[destinations]]\nname = "v"\nhost = "h"\nport = 1\n', "destinations[0].ae_title"),
        ('[[destinations]]\nname = "v"\nae_title = "V"\nport = 1\n', "destinations[0].host"),
        ('[[destinations]]\nname = "v"\nae_title = "V"\nhost = "h"\n', "destinations[0].port"),
        (VIEWER.replace("port = 11113", "port = 0"), "destinations[0].port"),
        (VIEWER.replace("port = 11113", "port = 70000"), "destinations[0].port"),
        (VIEWER.replace("port = 11113", 'port = "104"'), "destinations[0].port"),
        (VIEWER.replace('host = "10.9.0.2"', 'host = " "'), "destinations[0].host"),
        (VIEWER.replace('"VIEWER"', '"BACK\\\\SLASH"'), "destinations[0].ae_title"),
        (VIEWER.replace('"VIEWER"', '"SEVENTEEN_CHARS_X"'), "destinations[0].ae_title"),
        (VIEWER.replace('"VIEWER"', '"   "'), "destinations[0].ae_title"),
        (VIEWER.replace('"viewer"', '"a viewer"'), "destinations[0].name"),
        (VIEWER + 'colour = "red"\n', "destinations[0].colour"),
        (VIEWER + VIEWER.replace('"VIEWER"', '"OTHER"'), "destinations[1].name"),
        (VIEWER + VIEWER.replace('"viewer"', '"other"'), "destinations[1].ae_title"),
        (SOURCE_WITH_ADDRESS + VIEWER.replace('"VIEWER"', '"HOSP1CT"'), "destinations[0]"),
        ('[destinations]\nname = "v"\n', "destinations"),
        ("destinations = [1]\n", "destinations[0]"),
    ],
)
def test_invalid_destinations_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert key in str(err.value)


def test_a_source_without_address_leaves_its_ae_title_free_for_a_destination(
    tmp_path: Path,
) -> None:
    # The source's AE title is not reachable, so a destination may use it: C-MOVE to it goes
    # to the destination's address.  (Stores from that AE title still belong to the source.)
    s = load(tmp_path, SOURCE + VIEWER.replace('"VIEWER"', '"HOSP1CT"'))
    assert s.move_destination("HOSP1CT") == ("10.9.0.2", 11113)
    assert s.source_for_ae("HOSP1CT") is not None


def test_a_destination_may_always_receive_one_transfer_syntax(tmp_path: Path) -> None:
    s = load(tmp_path, VIEWER + 'transfer_syntax = "1.2.840.10008.1.2.1"\n')
    assert s.destinations[0].transfer_syntax == "1.2.840.10008.1.2.1"
    assert s.destination_syntax("VIEWER") == "1.2.840.10008.1.2.1"
    assert load(tmp_path, VIEWER).destination_syntax("VIEWER") == ""


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("explicit", "is not a UID"),
        ("1.2.840.10008.1.2.1.", "is not a UID"),
        # Lossy, or a syntax the archive has no encoder for: refused at start, named.
        ("1.2.840.10008.1.2.4.50", "cannot send 1.2.840.10008.1.2.4.50"),
        ("1.2.840.10008.1.2.4.91", "cannot send 1.2.840.10008.1.2.4.91"),
    ],
)
def test_a_destination_syntax_the_archive_cannot_send_is_one_clear_line(
    tmp_path: Path, value: str, said: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, VIEWER + f'transfer_syntax = "{value}"\n')
    message = str(err.value)
    assert "destinations[0].transfer_syntax" in message and said in message
    assert "\n" not in message


def test_transcoding_settings(tmp_path: Path) -> None:
    s = load(tmp_path, "[transcoding]\ncache_mb = 32\nworkers = 3\nallow_lossy = true\n")
    assert (s.transcoding.cache_mb, s.transcoding.workers, s.transcoding.allow_lossy) == (
        32,
        3,
        True,
    )
    assert load_settings(None, environ={}).transcoding.allow_lossy is False
    with pytest.raises(ConfigError, match=r"transcoding\.cache_mb"):
        load(tmp_path, "[transcoding]\ncache_mb = -1\n")
    with pytest.raises(ConfigError, match=r"transcoding\.workers"):
        load(tmp_path, "[transcoding]\nworkers = 0\n")
