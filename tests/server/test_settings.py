"""`stageflow server` settings: an optional YAML file under the STAGEFLOW_SERVER_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.errors import ConfigError
from stageflow.server.settings import load_server_settings


def test_yaml_file_sets_what_the_environment_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("port: 9100\nbind: 0.0.0.0\nheartbeat_interval: 2.5\n")
    monkeypatch.setenv("STAGEFLOW_SERVER_PORT", "9200")
    settings = load_server_settings(config)
    assert settings.port == 9200  # the environment wins
    assert settings.bind == "0.0.0.0" and settings.heartbeat_interval == 2.5
    monkeypatch.setenv("STAGEFLOW_SERVER_CONFIG", str(config))
    monkeypatch.delenv("STAGEFLOW_SERVER_PORT")
    assert load_server_settings().port == 9100


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot: 1\n", "unknown setting(s) prot"),
        ("port: lots\n", "port:"),
        ("- a list\n", "expected a mapping"),
        ("port: [unclosed\n", "cannot read"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r".*") as caught:
        load_server_settings(config)
    assert str(config) in str(caught.value) and message in str(caught.value)
