"""Settings: defaults that give a working single machine, CLASSIFLY_ environment overrides, policy checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.config import Settings, get_settings
from pipelines.zips import ZipLimits


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CLASSIFLY_ variable or .env file of the developer's may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("CLASSIFLY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_give_a_local_platform(tmp_path: Path) -> None:
    settings = Settings()

    assert settings.environment == "dev"
    assert settings.data_dir.is_absolute()
    assert settings.data_dir == tmp_path.resolve() / "classifly-data"
    assert settings.host == "127.0.0.1"
    assert settings.api_url == "http://127.0.0.1:8000"
    assert settings.allow_registration is True
    # Imports size their decode batches from the zip and run one decode task per CPU unless told otherwise.
    assert (settings.import_batch_size, settings.import_parallelism) == (0, 0)


def test_blob_root_and_catalog_file_derive_from_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")

    assert settings.blob_root == str(tmp_path / "d" / "blobs")
    assert settings.catalog_file == str(tmp_path / "d" / "catalog.duckdb")
    assert settings.state_dir() == tmp_path / "d" / "run"


def test_explicit_blob_uri_and_catalog_path_win(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, blob_uri="s3://bucket/prefix", catalog_path="/srv/catalog.duckdb")

    assert settings.blob_root == "s3://bucket/prefix"
    assert settings.catalog_file == "/srv/catalog.duckdb"


def test_relative_and_home_data_dirs_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert Settings(data_dir="rel/dir").data_dir == tmp_path.resolve() / "rel" / "dir"
    assert Settings(data_dir="~/cf").data_dir == (tmp_path / "home" / "cf").resolve()


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        pytest.param("CLASSIFLY_HOST", "0.0.0.0", "host", "0.0.0.0", id="host"),
        pytest.param("CLASSIFLY_API_PORT", "9001", "api_port", 9001, id="int"),
        pytest.param("CLASSIFLY_QUOTA_BYTES", "1024", "quota_bytes", 1024, id="quota"),
        pytest.param("CLASSIFLY_ALLOW_REGISTRATION", "false", "allow_registration", False, id="bool"),
        pytest.param("CLASSIFLY_ENVIRONMENT", "test", "environment", "test", id="literal"),
        pytest.param("classifly_session_hours", "1.5", "session_hours", 1.5, id="lower-case-name"),
    ],
)
def test_environment_overrides_with_prefix(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)

    assert getattr(get_settings(), attribute) == expected


def test_environment_data_dir_flows_into_derived_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLASSIFLY_DATA_DIR", str(tmp_path / "env-data"))

    assert get_settings().blob_root == str(tmp_path / "env-data" / "blobs")


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "10.0.0.1")
    monkeypatch.setenv("QUOTA_BYTES", "1")

    settings = Settings()

    assert (settings.host, settings.quota_bytes) == ("127.0.0.1", 5 * 2**30)


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFLY_API_PORT", "9001")

    assert get_settings(api_port=9002).api_port == 9002


def test_dotenv_file_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CLASSIFLY_UI_PORT=9999\n")

    assert Settings().ui_port == 9999


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("CLASSIFLY_ENVIRONMENT", "staging", id="unknown-environment"),
        pytest.param("CLASSIFLY_API_PORT", "eighty", id="not-a-number"),
    ],
)
def test_invalid_environment_values_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError):
        get_settings()


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"host": "127.0.0.1"}, id="loopback"),
        pytest.param({"host": "localhost"}, id="localhost"),
        pytest.param({"host": "0.0.0.0", "public_api_url": "https://cf.example.org"}, id="public-with-url"),
    ],
)
def test_production_accepts_safe_setups(overrides: dict) -> None:
    assert Settings(environment="production", **overrides).environment == "production"


def test_production_exposed_without_public_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="CLASSIFLY_PUBLIC_API_URL"):
        Settings(environment="production", host="0.0.0.0")


def test_production_check_also_applies_to_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFLY_ENVIRONMENT", "production")
    monkeypatch.setenv("CLASSIFLY_HOST", "0.0.0.0")

    with pytest.raises(ValidationError, match="CLASSIFLY_PUBLIC_API_URL"):
        get_settings()


def test_dev_may_expose_without_public_url() -> None:
    settings = Settings(host="0.0.0.0")

    assert settings.api_url == "http://0.0.0.0:8000"


def test_public_api_url_wins_over_host_and_port() -> None:
    assert Settings(public_api_url="https://cf.example.org").api_url == "https://cf.example.org"


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.quota_bytes = 1  # type: ignore[misc]


def test_zip_limits_follow_the_settings() -> None:
    settings = Settings(max_zip_entries=5, max_zip_uncompressed_bytes=1000, max_image_bytes=100, max_zip_ratio=9.0)

    assert settings.zip_limits == ZipLimits(
        max_entries=5, max_total_uncompressed=1000, max_entry_uncompressed=100, max_ratio=9.0
    )
