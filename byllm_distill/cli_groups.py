"""Noun/verb groups over the command line: `site ...`, `version ...`, `records ...`.

Each verb is the same click command as a flat one (`byllm-distill site list` is
`byllm-distill sites`, `version list` is `models`), so options, help and output are one
definition, and scripts written against the flat names keep working: those stay as
aliases, listed apart in `--help`.
"""

from __future__ import annotations

import click

# noun -> (help, {verb: flat command})
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "site": ("Call sites: list them, their decision log, pins, training retries, eval.",
             {"list": "sites", "history": "history", "pin": "pin", "unpin": "unpin",
              "retry": "retry", "eval": "eval"}),
    "version": ("A site's student versions: train, list, try, promote, roll back.",
                {"list": "models", "train": "train", "try": "try", "promote": "promote",
                 "rollback": "rollback"}),
}
RECORD_VERBS = {"validate": "validate"}  # added to the existing `records` group


class MainGroup(click.Group):
    """`--help` lists the groups and the other commands first, the flat aliases after."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        aliased = {flat: f"{noun} {verb}" for noun, (_, verbs) in GROUPS.items()
                   for verb, flat in verbs.items()}
        aliased.update({flat: f"records {verb}" for verb, flat in RECORD_VERBS.items()})
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        shown = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
        limit = formatter.width - 6 - max((len(name) for name, _ in shown), default=0)
        rows = [(name, cmd.get_short_help_str(limit)) for name, cmd in shown
                if name not in aliased]
        aliases = [(name, f"= {aliased[name]}") for name, _ in shown if name in aliased]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
        if aliases:
            with formatter.section("Aliases (the same commands under their flat names)"):
                formatter.write_dl(aliases)


def register(main: click.Group) -> None:
    """Add the groups; call after every flat command is registered."""
    for noun, (text, verbs) in GROUPS.items():
        group = click.Group(noun, help=text)
        for verb, flat in verbs.items():
            group.add_command(main.commands[flat], name=verb)
        main.add_command(group)
    records = main.commands["records"]
    assert isinstance(records, click.Group)
    for verb, flat in RECORD_VERBS.items():
        records.add_command(main.commands[flat], name=verb)
