"""Configuration layering and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from byllm_distill.config import load_config
from byllm_distill.errors import ConfigError


def _project(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "jac.toml").write_text(toml)
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    return sub


def test_defaults_use_project_root(tmp_path: Path) -> None:
    start = _project(tmp_path, '[project]\nname = "x"\n')
    config = load_config(start, environ={})
    assert config.capture is True
    assert config.data_dir == (tmp_path / ".byllm-distill").resolve()
    assert config.database_url == f"sqlite:///{(tmp_path / '.byllm-distill' / 'distill.db')}"


def test_jac_toml_then_env(tmp_path: Path) -> None:
    start = _project(tmp_path, '[plugins.distill]\ncapture = false\nhome = "data"\n')
    config = load_config(start, environ={})
    assert config.capture is False
    assert config.data_dir == (tmp_path / "data").resolve()
    env = {"BYLLM_DISTILL_CAPTURE": "1", "BYLLM_DISTILL_HOME": str(tmp_path / "elsewhere")}
    config = load_config(start, environ=env)
    assert config.capture is True and config.data_dir == (tmp_path / "elsewhere").resolve()


@pytest.mark.parametrize(("toml", "env", "message"), [
    ('[plugins.distill]\ncaptur = true\n', {}, "unknown key [plugins.distill].captur"),
    ('[plugins.distill]\ncapture = "maybe"\n', {}, "'capture' must be true/false"),
    ('[plugins.distill\n', {}, "cannot parse"),
    ('', {"BYLLM_DISTILL_CAPTURE": "perhaps"}, "BYLLM_DISTILL_CAPTURE"),
    ('', {"BYLLM_DISTILL_STORE_URL": "/tmp/x.db"}, "is not a database URL"),
])
def test_bad_config_names_the_key(tmp_path: Path, toml: str, env: dict, message: str) -> None:
    start = _project(tmp_path, toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(start, environ=env)


def test_site_overrides_and_defaults(tmp_path: Path) -> None:
    start = _project(tmp_path, (
        "[plugins.distill]\nthreshold = 0.8\nretrain_after = 10\n"
        '[plugins.distill.sites."*.create_next_map"]\nthreshold = 0.95\nmin_samples = 40\n'))
    config = load_config(start, environ={})
    assert config.retrain_after == 10
    assert config.site("rpg.create_next_level").threshold == 0.8
    rpg_map = config.site("rpg.create_next_map")
    assert rpg_map.threshold == 0.95 and rpg_map.min_samples == 40
    assert rpg_map.rollback_below == 0.75  # untouched keys keep their defaults


@pytest.mark.parametrize(("toml", "message"), [
    ("[plugins.distill]\nthreshold = 1.5\n", "'threshold' must be between 0 and 1"),
    ("[plugins.distill]\nretrain_after = \"many\"\n", "'retrain_after' must be a whole number"),
    ('[plugins.distill.sites."x"]\nthreshhold = 0.5\n', "unknown key 'threshhold'"),
    ("[plugins.distill]\nquiet_hours = \"night\"\n", "quiet_hours 'night' must look like"),
    ('[plugins.distill.sites."x"]\nmax_wait_ms = -5\n', "'max_wait_ms' must be 0 or more"),
])
def test_bad_routing_config(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_project(tmp_path, toml), environ={})


def test_a_tasks_own_settings_come_from_its_table_then_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from byllm_distill.rpg.settings import RpgSettings
    from byllm_distill.task_settings import task_settings

    monkeypatch.chdir(_project(tmp_path, "[plugins.distill]\ncapture = true\n"
                                         "[plugins.distill.tasks.rpg]\nteacher_errors = 0.25\n"))
    assert task_settings("rpg", RpgSettings, environ={}).teacher_errors == 0.25
    env = {"BYLLM_DISTILL_TEACHER_ERRORS": "0.5"}
    assert task_settings("rpg", RpgSettings, environ=env).teacher_errors == 0.5
    assert task_settings("other", RpgSettings, environ={}).teacher_errors == 0.0
    with pytest.raises(ConfigError, match="'teacher_errors' must be a number, got 'lots'"):
        task_settings("rpg", RpgSettings, environ={"BYLLM_DISTILL_TEACHER_ERRORS": "lots"})
    with pytest.raises(ConfigError, match="between 0 and 1, got 2.0"):
        task_settings("rpg", RpgSettings, environ={"BYLLM_DISTILL_TEACHER_ERRORS": "2"})


@pytest.mark.parametrize(("toml", "message"), [
    ("[plugins.distill.tasks.rpg]\nteacher_error = 0.1\n",
     r"tasks.rpg\]: unknown key 'teacher_error'; known keys: teacher_errors"),
    ("[plugins.distill]\nteacher_errors = 0.1\n",
     r"unknown key \[plugins.distill\].teacher_errors.*\[plugins.distill.tasks.NAME\]"),
    ("[plugins.distill]\ntasks = 3\n", r"must hold one table per task"),
])
def test_a_misplaced_or_unknown_task_setting_is_refused_with_where_it_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, message: str) -> None:
    from byllm_distill.rpg.settings import RpgSettings
    from byllm_distill.task_settings import task_settings

    monkeypatch.chdir(_project(tmp_path, toml))
    with pytest.raises(ConfigError, match=message):
        task_settings("rpg", RpgSettings, environ={})
