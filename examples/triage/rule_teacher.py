"""A deterministic teacher for the triage example: a byLLM model that answers by rules.

It stands for a hosted model on a task with one right answer per input (classification
and extraction, the most common `by llm()` uses): the severity follows words in the
title, the team is looked up from the product, the reply deadline is computed from the
customer tier and the severity, and a manager is needed for urgent tickets of top-tier
customers. Asking it the same input twice gives the same answer, so the quality gate
measures a teacher self-agreement of 1 for every field.
"""

from __future__ import annotations

import json
import random
from typing import Any

from byllm_distill.capture import args_json
from byllm_distill.code_model import CodeModel

TEAMS = {"billing": "finance", "app": "mobile", "api": "platform", "website": "frontend",
         "login": "identity"}
SYMPTOMS = {  # word in the title -> severity (1 low .. 4 urgent)
    "down": 4, "outage": 4, "crashes": 3, "error": 3, "fails": 3, "slow": 2, "confusing": 1,
    "typo": 1,
}
EXTRAS = ["since Monday", "for some users", "after the update", "on every page", "again",
          "this morning", "in Europe", "", "when I retry", "for my whole team"]
REPLY_HOURS = {1: 24, 2: 12, 3: 4}


def triage(ticket: dict[str, Any]) -> dict[str, Any]:
    words = ticket["title"].lower().split()
    severity = max((SYMPTOMS[w] for w in words if w in SYMPTOMS), default=1)
    hours = REPLY_HOURS[ticket["customer_tier"]]
    if severity >= 3:
        hours //= 2
    return {"severity": severity, "team": TEAMS[ticket["product"]],
            "reply_within_hours": hours,
            "needs_manager": severity == 4 and ticket["customer_tier"] == 3}


def make_tickets(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` seeded tickets (title, product, customer tier, hours open)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        product = rng.choice(sorted(TEAMS))
        symptom = rng.choice(sorted(SYMPTOMS))
        title = " ".join(filter(None, [product.capitalize(), symptom, rng.choice(EXTRAS)]))
        out.append({"title": title, "product": product, "customer_tier": rng.randint(1, 3),
                    "hours_open": rng.randint(0, 72)})
    return out


class RuleTeacher(CodeModel):
    """Answers `triage` calls with `triage(ticket)` as JSON."""

    def answer(self, mt_run: Any) -> str:
        return json.dumps(triage(args_json(mt_run)["ticket"]))
