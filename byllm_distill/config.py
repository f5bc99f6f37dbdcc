"""Configuration: typed dataclasses, defaults in one place, layered sources.

Order of precedence (last wins): the defaults below, `[plugins.distill]` in the nearest
`jac.toml` (searched upward from the working directory), then `BYLLM_DISTILL_*`
environment variables. Per-site routing settings go in `[plugins.distill.sites."KEY"]`
tables (KEY may be a glob such as `"*.create_next_map"`); they override the site
defaults in `[plugins.distill]`. A task plug-in's own settings go in
`[plugins.distill.tasks.NAME]` (read by the task through task_settings.py). Every value is
validated on load and a bad one raises `ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from byllm_distill.errors import ConfigError
from byllm_distill.site_settings import SiteSettings

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
DATA_DIR_NAME = ".byllm-distill"


@dataclass(frozen=True)
class DistillConfig:
    """Settings for capture, the store, routing and the training worker."""

    capture: bool = field(default=True, metadata={
        "help": "Record every `by llm()` call.", "env": "BYLLM_DISTILL_CAPTURE"})
    home: Path | None = field(default=None, metadata={
        "help": "Data directory; default `.byllm-distill` in the project root (the folder "
                "holding jac.toml, else the working directory).", "env": "BYLLM_DISTILL_HOME"})
    store_url: str | None = field(default=None, metadata={
        "help": "SQLAlchemy URL of the store; default a SQLite file in `home`. A "
                "`postgresql+psycopg://...` URL shares one store between servers.",
        "env": "BYLLM_DISTILL_STORE_URL"})
    artifacts: str | None = field(default=None, metadata={
        "help": "Shared storage for trained versions, e.g. 's3://bucket/prefix' (any fsspec "
                "URL or a shared folder); unset: each version stays in the data dir of the "
                "machine that trained it.", "env": "BYLLM_DISTILL_ARTIFACTS"})
    artifacts_endpoint: str | None = field(default=None, metadata={
        "help": "Endpoint URL of an S3-compatible server (MinIO, Ceph, moto) for "
                "`artifacts`; unset: AWS.", "env": "BYLLM_DISTILL_ARTIFACTS_ENDPOINT"})
    teacher: str | None = field(default=None, metadata={
        "help": "litellm model name (e.g. gpt-4o) that `byllm_distill.teacher(...)` returns "
                "instead of the task's offline teacher.", "env": "BYLLM_DISTILL_TEACHER"})
    routing: bool = field(default=True, metadata={
        "help": "Serve sites from their promoted students (off: always the teacher).",
        "env": "BYLLM_DISTILL_ROUTING"})
    exit_wait: float = field(default=30.0, metadata={
        "help": "Seconds a program waits at exit for shadow samples and teacher checks "
                "still running in the background; unfinished ones are given up and counted "
                "as dropped (0: do not wait).", "env": "BYLLM_DISTILL_EXIT_WAIT"})
    auto_train: bool = field(default=False, metadata={
        "help": "Let the app start the training worker itself: when a site becomes due, one "
                "detached, low-priority `byllm-distill worker --once` per store (a lock in "
                "the store), within quiet_hours and max_load; off: run the worker yourself.",
        "env": "BYLLM_DISTILL_AUTO_TRAIN"})
    retrain_after: int = field(default=50, metadata={
        "help": "A site is due for training when it has this many new valid teacher "
                "records since its last version.", "env": "BYLLM_DISTILL_RETRAIN_AFTER"})
    quiet_hours: str | None = field(default=None, metadata={
        "help": "Train only between these local hours, e.g. '22-6'; unset means any time.",
        "env": "BYLLM_DISTILL_QUIET_HOURS"})
    max_load: float | None = field(default=None, metadata={
        "help": "Train only while the 1-minute load average per core is below this.",
        "env": "BYLLM_DISTILL_MAX_LOAD"})
    train_steps: int | None = field(default=None, metadata={
        "help": "Optimizer steps per training job (unset: the trainer's default budget).",
        "env": "BYLLM_DISTILL_TRAIN_STEPS"})
    stale_after: float = field(default=120.0, metadata={
        "help": "Seconds without a heartbeat after which a running training job counts as "
                "abandoned (its worker died) and another worker retries it.",
        "env": "BYLLM_DISTILL_STALE_AFTER"})
    retry_backoff: float = field(default=300.0, metadata={
        "help": "Seconds a site whose training failed waits before it is retried; doubles "
                "with each further failure (at most 6 h).", "env": "BYLLM_DISTILL_RETRY_BACKOFF"})
    max_failures: int = field(default=5, metadata={
        "help": "Failures in a row after which a site needs attention and is not retried "
                "until `byllm-distill retry SITE`.", "env": "BYLLM_DISTILL_MAX_FAILURES"})
    train_device: str = field(default="auto", metadata={
        "help": "Where the worker trains: cpu, cuda, or auto (cuda when a GPU is visible); "
                "the manifest records the device used.", "env": "BYLLM_DISTILL_TRAIN_DEVICE"})
    validators: tuple[str, ...] = field(default=(), metadata={
        "help": "Extra validator plugins as 'module:function' (each gets the registry), "
                "comma-separated in the environment.", "env": "BYLLM_DISTILL_VALIDATORS"})
    disabled_validators: tuple[str, ...] = field(default=(), metadata={
        "help": "Plug-ins whose validators are not loaded, by name (e.g. 'rpg'; the "
                "task's metrics and commands stay).",
        "env": "BYLLM_DISTILL_DISABLED_VALIDATORS"})
    serving: str = field(default="merged", metadata={
        "help": "How students are served: 'merged' (each version's own merged GGUF) or "
                "'adapter' (its LoRA adapter over one shared base GGUF per base model; "
                "versions without an adapter, or without their base here, serve merged).",
        "env": "BYLLM_DISTILL_SERVING"})
    max_batch: int = field(default=8, metadata={
        "help": "Calls one loaded student model answers at once: their tokens are decoded "
                "together, one forward pass per step, each in a sequence of its own in the "
                "model's KV cache (memory grows with it); more calls queue (1: one at a "
                "time).", "env": "BYLLM_DISTILL_MAX_BATCH"})
    drafts: bool = field(default=True, metadata={
        "help": "Read ahead while a call decodes alone: each pass also evaluates a guess at "
                "the next token from the version's own training answers, and skips the "
                "next pass when the model draws it (the answer is drawn as without).",
        "env": "BYLLM_DISTILL_DRAFTS"})
    narrow_head: bool = field(default=True, metadata={
        "help": "Where a site's grammar writes only a few characters (a map), the "
                "student scores only the tokens made of them instead of its whole "
                "vocabulary (checked against llama.cpp's own logits at load), merged or "
                "served as an adapter.",
        "env": "BYLLM_DISTILL_NARROW_HEAD"})
    max_resident_mb: int = field(default=0, metadata={
        "help": "Memory budget in MB for the student models loaded in one process (their "
                "weights and KV caches, measured at load): loading one past it first "
                "unloads the least recently used others (0: no limit).",
        "env": "BYLLM_DISTILL_MAX_RESIDENT_MB"})
    defaults: SiteSettings = field(default_factory=SiteSettings, metadata={"help": "", "env": ""})
    sites: dict[str, SiteSettings] = field(default_factory=dict, metadata={"help": "", "env": ""})
    # `[plugins.distill.tasks.NAME]` tables as written; a task reads its own (task_settings.py)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "", "env": ""})

    def __post_init__(self) -> None:
        if self.store_url is not None and "://" not in self.store_url:
            raise ConfigError(
                f"store_url {self.store_url!r} is not a database URL; use e.g. "
                "'sqlite:////abs/path/distill.db' or 'postgresql+psycopg://user@host/db'.")
        if self.exit_wait < 0:
            raise ConfigError(f"'exit_wait' must be 0 or more seconds, got {self.exit_wait!r}.")
        if self.retrain_after < 1:
            raise ConfigError(f"'retrain_after' must be at least 1, got {self.retrain_after}.")
        if self.quiet_hours is not None:
            parse_hours(self.quiet_hours)
        if self.retry_backoff < 0:
            raise ConfigError(f"'retry_backoff' must be 0 or more seconds, got "
                              f"{self.retry_backoff!r}.")
        if self.max_failures < 1:
            raise ConfigError(f"'max_failures' must be at least 1, got {self.max_failures!r}.")
        if self.stale_after <= 0:
            raise ConfigError(f"'stale_after' must be positive seconds, got {self.stale_after!r}.")
        if not 1 <= self.max_batch <= 64:
            raise ConfigError(f"'max_batch' must be between 1 and 64, got {self.max_batch!r}.")
        if self.max_resident_mb < 0:
            raise ConfigError(f"'max_resident_mb' must be 0 or more, got "
                              f"{self.max_resident_mb!r}.")
        if self.serving not in ("merged", "adapter"):
            raise ConfigError(f"'serving' must be merged or adapter, got {self.serving!r}.")
        if self.train_device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"'train_device' must be auto, cpu or cuda, got "
                              f"{self.train_device!r}.")

    @property
    def data_dir(self) -> Path:
        return (self.home or project_root() / DATA_DIR_NAME).resolve()

    @property
    def database_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'distill.db'}"

    def site(self, key: str) -> SiteSettings:
        """The settings for one site: defaults, then every matching `sites` table in order."""
        settings = self.defaults
        for pattern, override in self.sites.items():
            if fnmatch.fnmatchcase(key, pattern):
                settings = override
        return settings


def parse_hours(text: str) -> tuple[int, int]:
    """'22-6' → (22, 6): a window of local hours, which may wrap past midnight."""
    try:
        start, end = (int(part) for part in text.split("-"))
    except ValueError as exc:
        raise ConfigError(f"quiet_hours {text!r} must look like '22-6' (start-end hours)") from exc
    if not (0 <= start <= 23 and 0 <= end <= 24):
        raise ConfigError(f"quiet_hours {text!r}: hours must be 0-23")
    return start, end


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` holding jac.toml, else `start` itself."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "jac.toml").is_file():
            return folder
    return here


def base_type(annotation: Any) -> Any:
    """`int | None` → `int`: the type a configured value is coerced to."""
    if isinstance(annotation, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


_HINTS = {**typing.get_type_hints(DistillConfig), **typing.get_type_hints(SiteSettings)}


def coerce_value(name: str, value: object, origin: str, hint: Any = None) -> object:
    """`value` as the type of setting `name` (`hint`, else the config field's)."""
    kind = base_type(_HINTS[name] if hint is None else hint)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"{origin}: '{name}' must be true/false or 1/0, got {value!r}.")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{origin}: '{name}' must be a number, got {value!r}.")
        try:
            number = float(value) if kind is float else int(str(value).strip())
        except (TypeError, ValueError) as exc:
            what = "a number" if kind is float else "a whole number"
            raise ConfigError(f"{origin}: '{name}' must be {what}, got {value!r}.") from exc
        return number
    if typing.get_origin(kind) is dict:
        if isinstance(value, str):
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{origin}: '{name}' must be a table such as "
                                  f"{{rpg_patterns = 0.05}}, got {value!r}.") from exc
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: '{name}' must be a table of name = number, got "
                              f"{value!r}.")
        whole = typing.get_args(kind)[1] is int
        out = {}
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, int | float) or (
                    whole and item != int(item)):
                what = "a whole number" if whole else "a number"
                raise ConfigError(f"{origin}: '{name}.{key}' must be {what}, got {item!r}.")
            out[str(key)] = int(item) if whole else float(item)
        return out
    if typing.get_origin(kind) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{origin}: '{name}' must be a list of strings, got {value!r}.")
        return tuple(i.strip() for i in items if i.strip())
    if kind is Path:
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ConfigError(f"{origin}: '{name}' must be a folder path, got {value!r}.")
        return Path(str(value)).expanduser()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: '{name}' must be a non-empty string, got {value!r}.")
    return value.strip()


def _site_settings(table: Any, base: SiteSettings, origin: str) -> SiteSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{origin} must be a table.")
    known = {f.name for f in fields(SiteSettings)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{origin}: unknown key '{key}'; known keys: "
                              f"{', '.join(sorted(known))}.")
        values[key] = coerce_value(key, value, origin)
    return replace(base, **values)


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
    top = {f.name for f in fields(DistillConfig)} - {"defaults", "sites", "tasks"}
    site_keys = {f.name for f in fields(SiteSettings)}
    values: dict[str, object] = {}
    defaults: dict[str, object] = {}
    origin = f"{path} [plugins.distill]"
    for key, value in section.items():
        if key in ("sites", "tasks"):
            continue
        if key in site_keys:
            defaults[key] = value
            continue
        if key not in top:
            raise ConfigError(f"{path}: unknown key [plugins.distill].{key}; known keys: "
                              f"{', '.join(sorted(top | site_keys | {'sites', 'tasks'}))} "
                              "(a task's own settings go in [plugins.distill.tasks.NAME]).")
        value = coerce_value(key, value, origin)
        if key == "home" and not Path(str(value)).is_absolute():
            value = root / Path(str(value))
        values[key] = value
    base = _site_settings(defaults, SiteSettings(), origin)
    values["defaults"] = base
    sites = section.get("sites", {})
    if not isinstance(sites, dict):
        raise ConfigError(f"{path}: [plugins.distill.sites] must be a table of site tables.")
    tasks = section.get("tasks", {})
    if not isinstance(tasks, dict) or not all(isinstance(t, dict) for t in tasks.values()):
        raise ConfigError(f"{path}: [plugins.distill.tasks] must hold one table per task.")
    values["tasks"] = {name: dict(table) for name, table in tasks.items()}
    values["sites"] = {
        key: _site_settings(table, base, f'{path} [plugins.distill.sites."{key}"]')
        for key, table in sites.items()
    }
    return values


def load_config(start: Path | None = None, environ: dict[str, str] | None = None) -> DistillConfig:
    """Read defaults, then jac.toml, then the environment; raise `ConfigError` if invalid."""
    env = os.environ if environ is None else environ
    root = project_root(start)
    values = _from_toml(root)
    for f in fields(DistillConfig):
        var = f.metadata.get("env")
        if var and env.get(var, "") != "":
            values[f.name] = coerce_value(f.name, env[var], f"environment variable {var}")
    values.setdefault("home", root / DATA_DIR_NAME)
    return DistillConfig(**values)  # type: ignore[arg-type]


def with_overrides(config: DistillConfig, values: dict[str, object],
                   origin: str = "command line") -> DistillConfig:
    """`config` with the given settings replaced (command-line options named after
    `DistillConfig` fields), coerced and validated as configured values are."""
    given = {name: coerce_value(name, value, f"{origin} --{name.replace('_', '-')}")
             for name, value in values.items() if value is not None}
    return replace(config, **given) if given else config  # type: ignore[arg-type]
