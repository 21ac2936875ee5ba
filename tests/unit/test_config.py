from __future__ import annotations

from pathlib import Path

import pytest

from godwit.config import model as config
from godwit.config.model import DEFAULT_TOML
from godwit.errors import ConfigError


def test_default_file_parses_to_defaults(tmp_path: Path) -> None:
    p = tmp_path / "godwit.toml"
    p.write_text(DEFAULT_TOML.format(name="x"))
    cfg = config.load(p)
    assert cfg.name == "x"
    assert cfg.replication.block_size == 65536
    assert cfg.cache.kind == "local" and cfg.cache.pack_size_mib == 32
    assert cfg.replicas.keep_recovery_points == 3


@pytest.mark.parametrize("text, match", [
    ("[cache]\nkind = 'ftp'", "kind 'ftp' is unknown"),
    ("[replication]\nblock_size_kib = 48", "power of two"),
    ("[replication]\nhash = 'md5'", "hash 'md5'"),
    ("[replication]\nupload_concurrency = 0", "upload_concurrency"),
    ("[replication]\nblock_size_kib = 'big'", "must be an integer"),
    ("[replication]\nblok_size_kib = 64", "unknown key"),
    ("[replication.throttle]\nschedule = { '8-18' = 50 }", "HH:MM-HH:MM"),
    ("[replication.throttle]\nschedule = { '08:00-18:00' = -1 }", "positive"),
    ("[replication.throttle]\nmax_mbps = 0", "positive"),
    ("[project]\nformat = 2", "format 2"),
    ("[replicas]\nkeep_recovery_points = 0", "keep_recovery_points"),
    ("surprise = 1", "unknown key"),
    ("[cache\n", "not valid TOML"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "godwit.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        config.load(p)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")
