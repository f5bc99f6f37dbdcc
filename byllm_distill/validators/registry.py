"""Which validators check which call site.

A validator is `fn(record) -> list[Verdict]` (see base.py); it reads `record.output` (the
parsed answer as JSON), `record.args` and anything else on the record. Validators are
registered against a call-site pattern: an exact key (`rpg.create_next_map`) or a glob
(`*.create_next_map`, handy because a program run as `__main__` is keyed by its file
stem). Generic validators (generic.py) apply to every site.

Other packages add theirs as task plug-ins (tasks.py: one hook shape and one loader for
validators, metrics and renderers), loaded the first time the registry is used. A
project can also list validator functions `register(registry: ValidatorRegistry)`
without packaging them (`validators = ["myproject.checks:register"]` in
`[plugins.distill]`) and switch a plug-in off by name (`disabled_validators = ["rpg"]`).

Prefix checks. A validator may name verdicts that are *prefix-closed*: checked on an answer
whose arrays are cut short, such a verdict that fails fails for every way of finishing
them (an enemy on the spawn stays on the spawn whatever comes after). The student runtime
checks these after each array item it writes and redraws an item that fails one
(`runtime/guide.py`), instead of finding out when the whole answer is written. Count-like
verdicts ("exactly N enemies") are not prefix-closed and must not be named.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from byllm_distill import tasks
from byllm_distill.validators.base import Verdict

if TYPE_CHECKING:
    from byllm_distill.records import Record

log = logging.getLogger("byllm_distill")

Validator = Callable[["Record"], Iterable[Verdict]]


class ValidatorRegistry:
    def __init__(self) -> None:
        self._by_pattern: list[tuple[str, Validator]] = []
        self._prefix_closed: dict[Validator, frozenset[str]] = {}
        self._loaded = False

    def register(self, pattern: str, validator: Validator,
                 prefix_closed: Iterable[str] = ()) -> None:
        """Check every record of the sites matching `pattern` with `validator`;
        `prefix_closed` names its verdicts that hold on cut-short answers (see above)."""
        self._by_pattern.append((pattern, validator))
        if prefix_closed:
            self._prefix_closed[validator] = frozenset(prefix_closed)

    def validator(self, pattern: str) -> Callable[[Validator], Validator]:
        """Decorator form of `register`."""

        def decorate(fn: Validator) -> Validator:
            self.register(pattern, fn)
            return fn

        return decorate

    def for_site(self, site: str) -> list[Validator]:
        self._load_entry_points()
        return [fn for pattern, fn in self._by_pattern if fnmatch.fnmatchcase(site, pattern)]

    def prefix_validators(self, site: str) -> list[tuple[Validator, frozenset[str]]]:
        """(validator, its prefix-closed verdict names) for the site's validators that
        declared any."""
        return [(fn, self._prefix_closed[fn]) for fn in self.for_site(site)
                if fn in self._prefix_closed]

    def validate(self, record: Record) -> list[Verdict]:
        """Generic verdicts, then every task verdict for the record's site.

        A validator that raises yields a failing verdict naming the exception, so a
        buggy validator can never pass a record by accident.
        """
        from byllm_distill.validators.generic import generic_verdicts

        verdicts = generic_verdicts(record)
        if not all(v.passed for v in verdicts):
            return verdicts
        for fn in self.for_site(record.site):
            name = getattr(fn, "__name__", "validator")
            try:
                verdicts.extend(fn(record))
            except Exception as exc:  # noqa: BLE001 - a broken validator fails the record
                verdicts.append(Verdict(name, False, f"validator raised {type(exc).__name__}: "
                                                     f"{exc}"))
        return verdicts

    def load(self) -> None:
        """Load what checking needs now rather than at the first record: the task
        plug-ins and the generic validators' jsonschema (capture's writer thread does
        this when it starts)."""
        from byllm_distill.validators import generic  # noqa: F401 - imports jsonschema

        self._load_entry_points()

    def _load_entry_points(self) -> None:
        """The task plug-ins, at first use (tasks.py); a registry made apart (tests) gets
        none."""
        if not self._loaded:
            if self is registry:
                tasks.load("validators", self)
            self._loaded = True


registry = ValidatorRegistry()
validator = registry.validator
