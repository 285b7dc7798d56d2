"""``[[replicas]]`` and ``[dr]`` in the configuration: what an infrastructure team writes, and
one clear line for each mistake."""

from __future__ import annotations

import re

import pytest

from vna.config import load_settings
from vna.errors import ConfigError


def settings(toml: str, **env: str):
    return load_settings(environ={"VNA_CONFIG_TOML": toml, **env})


def test_replicas_and_dr_settings() -> None:
    s = settings(
        'storage_url = "s3://vna-archive?region=eu-west-1"\n'
        "[dr]\nsweep_every_seconds = 60\n"
        '[[replicas]]\nname = "dr-eu"\nstorage_url = "s3://bucket-dr?region=eu-central-1"\n'
        '[[replicas]]\nname = "nas"\nstorage_url = "file:///mnt/nas/objects"\n',
        VNA_DR_READ_FALLBACK="false",
    )
    assert [(r.name, r.storage_url) for r in s.replicas] == [
        ("dr-eu", "s3://bucket-dr?region=eu-central-1"),
        ("nas", "file:///mnt/nas/objects"),
    ]
    assert s.dr.sweep_every_seconds == 60
    assert s.dr.read_fallback is False


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[replicas]]\nname = "dr"\n', "'replicas[0].storage_url' is required"),
        ('[[replicas]]\nname = "d r"\nstorage_url = "file:///x"\n', "'replicas[0].name'"),
        ('[[replicas]]\nname = "primary"\nstorage_url = "file:///x"\n', "'primary' names"),
        (
            '[[replicas]]\nname = "a"\nstorage_url = "file:///x"\n'
            '[[replicas]]\nname = "a"\nstorage_url = "file:///y"\n',
            "declared twice",
        ),
        ('[[replicas]]\nname = "a"\nstorage_url = "ftp://x"\n', "file:// or s3://"),
        (
            'storage_url = "s3://same"\n[[replicas]]\nname = "a"\nstorage_url = "s3://same"\n',
            "same store as storage_url",
        ),
        ("[dr]\nsweep_every_seconds = 0\n", "'dr.sweep_every_seconds' must be positive"),
        ('[[replicas]]\nname = "a"\nstorage_url = "file:///x"\nregion = "y"\n', "unknown"),
    ],
)
def test_mistakes_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(toml)
