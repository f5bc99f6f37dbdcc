"""Configuration: one typed dataclass, defaults in one place, layered sources.

Order of precedence (last wins): the defaults below, `[plugins.distill]` in the nearest
`jac.toml` (searched upward from the working directory), then `BYLLM_DISTILL_*`
environment variables. Every value is validated on load and a bad one raises
`ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from byllm_distill.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
DATA_DIR_NAME = ".byllm-distill"


@dataclass(frozen=True)
class DistillConfig:
    """Settings for capture and the store."""

    capture: bool = field(
        default=True,
        metadata={"help": "Record every `by llm()` call (env BYLLM_DISTILL_CAPTURE=0|1).",
                  "env": "BYLLM_DISTILL_CAPTURE"},
    )
    home: Path | None = field(
        default=None,
        metadata={"help": "Data directory; default `.byllm-distill` in the project root "
                          "(the folder holding jac.toml, else the working directory).",
                  "env": "BYLLM_DISTILL_HOME"},
    )
    store_url: str | None = field(
        default=None,
        metadata={"help": "SQLAlchemy URL of the store; default a SQLite file in `home`. "
                          "A `postgresql+psycopg://...` URL shares one store between servers.",
                  "env": "BYLLM_DISTILL_STORE_URL"},
    )
    teacher: str | None = field(
        default=None,
        metadata={"help": "litellm model name used as teacher by the bundled examples "
                          "(e.g. gpt-4o); unset means the offline teacher.",
                  "env": "BYLLM_DISTILL_TEACHER"},
    )

    def __post_init__(self) -> None:
        if self.store_url is not None and "://" not in self.store_url:
            raise ConfigError(
                f"store_url {self.store_url!r} is not a database URL; use e.g. "
                "'sqlite:////abs/path/distill.db' or 'postgresql+psycopg://user@host/db'."
            )

    @property
    def data_dir(self) -> Path:
        return (self.home or project_root() / DATA_DIR_NAME).resolve()

    @property
    def database_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'distill.db'}"


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` holding jac.toml, else `start` itself."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "jac.toml").is_file():
            return folder
    return here


def _coerce(name: str, value: object, origin: str) -> object:
    if name == "capture":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{origin}: 'capture' must be true/false or 1/0, got {value!r}.")
    if name == "home":
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ConfigError(f"{origin}: 'home' must be a folder path, got {value!r}.")
        return Path(str(value)).expanduser()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: '{name}' must be a non-empty string, got {value!r}.")
    return value.strip()


def _from_toml(root: Path) -> dict[str, object]:
    path = root / "jac.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse ({exc}); fix the TOML syntax.") from exc
    section = data.get("plugins", {}).get("distill", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [plugins.distill] must be a table.")
    known = {f.name for f in fields(DistillConfig)}
    values: dict[str, object] = {}
    for key, value in section.items():
        if key not in known:
            raise ConfigError(
                f"{path}: unknown key [plugins.distill].{key}; known keys: "
                f"{', '.join(sorted(known))}."
            )
        value = _coerce(key, value, f"{path} [plugins.distill]")
        if key == "home" and not Path(str(value)).is_absolute():
            value = root / Path(str(value))
        values[key] = value
    return values


def load_config(start: Path | None = None, environ: dict[str, str] | None = None) -> DistillConfig:
    """Read defaults, then jac.toml, then the environment; raise `ConfigError` if invalid."""
    env = os.environ if environ is None else environ
    root = project_root(start)
    values = _from_toml(root)
    for f in fields(DistillConfig):
        var = f.metadata["env"]
        if env.get(var, "") != "":
            values[f.name] = _coerce(f.name, env[var], f"environment variable {var}")
    values.setdefault("home", root / DATA_DIR_NAME)
    return DistillConfig(**values)  # type: ignore[arg-type]
