"""Per-site routing and promotion settings (`SiteSettings`): the defaults under
`[plugins.distill]` and the overrides in `[plugins.distill.sites."KEY"]` tables; config.py
layers and loads them. Every value is checked here, with an error naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field

from byllm_distill.errors import ConfigError


@dataclass(frozen=True)
class SiteSettings:
    """Routing and promotion settings; defaults apply to every site unless overridden."""

    threshold: float = field(default=0.9, metadata={
        "help": "Validity: promote only when the Wilson 95% lower bound of the student's "
                "pass-every-validator rate (held-out + shadow answers) is at least this."})
    agreement_margin: float = field(default=0.1, metadata={
        "help": "Agreement: per top-level answer field, the student's exact agreement with "
                "the teacher may fall at most this far below the teacher's agreement with "
                "itself (lower 95% bound of the difference)."})
    fidelity_margin: float = field(default=0.08, metadata={
        "help": "Fidelity: the student's distance to the teacher's answers (per-path value "
                "distributions) may exceed the teacher's split-half distance by at most "
                "this (upper 95% bootstrap bound)."})
    margins: dict[str, float] = field(default_factory=dict, metadata={
        "help": "Margins of the site's task fidelity criteria by name, e.g. "
                "{rpg_patterns = 0.05}; unset names keep the task's own default."})
    teacher_repeats: int = field(default=40, metadata={
        "help": "Shadow inputs per site contract that the teacher is asked a second time, "
                "to measure its self-agreement (a cost: one extra teacher call each). 0 "
                "assumes a deterministic teacher: every field must then match."})
    rating_margin: float = field(default=0.5, metadata={
        "help": "Ratings: the student's mean rubric score may be at most this below the "
                "teacher's (lower 95% bound), when both have min_ratings ratings."})
    preference_margin: float = field(default=0.1, metadata={
        "help": "Ratings: the student's win rate in blind side-by-side preferences may be "
                "at most this below 0.5 (lower 95% bound)."})
    min_ratings: int = field(default=5, metadata={
        "help": "Ratings (or preferences) each side needs before they count in the gate."})
    agreement: float = field(default=0.0, metadata={
        "help": "Legacy: also require the mean leaf agreement with the teacher to be at "
                "least this (a point estimate; 0 disables)."})
    min_samples: int = field(default=20, metadata={
        "help": "Scored answers needed before the gate decides (held-out + shadow), and "
                "teacher-checked served answers before quality can roll a student back."})
    min_shadow: int = field(default=3, metadata={
        "help": "...of which at least this many are live shadow samples."})
    rollback_below: float = field(default=0.75, metadata={
        "help": "Validity rollback: roll back when even the Wilson upper bound of the "
                "recent served answers' pass rate is below this."})
    rollback_window: int = field(default=50, metadata={
        "help": "Rollback window: the most recent N served answers (validity) and the "
                "most recent N of them checked against the teacher (agreement, fidelity)."})
    check_fraction: float = field(default=0.05, metadata={
        "help": "Fraction of student-served calls also sent to the teacher and compared."})
    shadow_fraction: float = field(default=1.0, metadata={
        "help": "Fraction of teacher calls in shadow mode that also run the student."})
    drop_inputs: tuple[str, ...] = field(default=(), metadata={
        "help": "Argument paths the student never reads, e.g. [\"self/prev_level_maps\"] "
                "(training and serving; the teacher still gets everything)."})
    keep_last: dict[str, int] = field(default_factory=dict, metadata={
        "help": "List arguments the student reads only the newest N items of, e.g. "
                "{\"self/prev_levels\" = 3}."})
    prompt_budget: int = field(default=0, metadata={
        "help": "Most tokens of the student's prompt; longer inputs have their lists cut to "
                "the newest items (0: derived from max_length and the longest answer)."})
    max_wait_ms: float = field(default=0.0, metadata={
        "help": "Wait budget: a call that would queue longer than this for a busy student "
                "(expected from the calls ahead of it and its recent answer times) is "
                "answered by the teacher, recorded with that reason (0: no limit)."})

    def __post_init__(self) -> None:
        for name in ("threshold", "agreement", "rollback_below", "check_fraction",
                     "shadow_fraction", "agreement_margin", "fidelity_margin",
                     "preference_margin"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"'{name}' must be between 0 and 1, got {value!r}.")
        for name in ("min_shadow", "teacher_repeats"):
            if getattr(self, name) < 0:
                raise ConfigError(f"'{name}' must be 0 or more, got {getattr(self, name)!r}.")
        if self.rating_margin < 0:
            raise ConfigError(f"'rating_margin' must be 0 or more, got {self.rating_margin!r}.")
        for key, value in self.keep_last.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"'keep_last.{key}' must be a whole number of 1 or more, got "
                                  f"{value!r}.")
        if self.max_wait_ms < 0:
            raise ConfigError(f"'max_wait_ms' must be 0 or more, got {self.max_wait_ms!r}.")
        if self.prompt_budget < 0:
            raise ConfigError(f"'prompt_budget' must be 0 or more, got {self.prompt_budget!r}.")
        for key, value in self.margins.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"'margins.{key}' must be a number of 0 or more, got "
                                  f"{value!r}.")
        for name in ("min_samples", "rollback_window", "min_ratings"):
            if getattr(self, name) < 1:
                raise ConfigError(f"'{name}' must be at least 1, got {getattr(self, name)!r}.")
