"""The token loop of one student answer: sampling, the grammar, and guided redraws.

Contract. `Decoder(llama, max_tokens).attempt(n_prompt, logits, grammar, temperature,
top_p, rng, guide, last)` is a generator: the token loop of one attempt after a prompt
already evaluated (`logits`: what the model predicts after it), written as the requests
it makes of the model. It yields `Eval(tokens, pos)` (put these tokens into the call's
sequence from position `pos` on, dropping whatever the sequence held from there) and is
sent back the next-token logits, a numpy array it may keep; it returns (tokens, finish
reason, redraws). A `Batcher` (batch.py) drives it, so the model work of several calls
runs in one forward pass per step while the Python below runs per call. The loop never
touches the model's context itself, so nothing here depends on which sequence it decodes
in or who else is decoding.

- Sampling: greedy at temperature 0, else a draw from the top-p mass of the `TOP_K` best
  tokens. The grammar (the call's own copy) is checked lazily, as llama.cpp's own
  `common_sampler` does: the pick is made from the raw logits first, and only when the
  grammar rejects it are all tokens filtered and the pick repeated (a trained student's
  pick nearly always fits, so the 49k-token filter runs at few steps).
- Guided redraws (with a `Guide`, see guide.py): when an item fails a prefix check, first
  its last number is redrawn from the values that would pass (the guide tries each one;
  an enemy that landed on a wall moves along its column, a wall that went diagonal gets a
  straight end), sampled by the model's own preference among them. If no value passes,
  the whole item is drawn again from the last checkpoint, a little hotter each time. A
  rollback returns to the checkpoint's position (the next request starts there, so the
  later KV entries are dropped), its saved next-token logits, a copy of the grammar's
  state and the guide's cursor.
- Jump-forward (forced.py): after each sampled token, the tokens the grammar forces next
  (a `],[` after a coordinate that cannot grow, the `,` between two numbers) are written
  at once, each through the guide like a sampled one, and go into the same request as
  that token: one forward pass for all of them. Checkpoints are taken after a request's
  last token only. When nothing but the end can follow, the answer ends without a pass
  for the end-of-text token. `jump_forward = False` decodes token by token (comparisons).
- Drafts (draft.py): each request may carry the drafter's guess at the next token, with
  what the grammar forces after it; a driver that reads it sends back the logits after
  the guess as well. The next token is still drawn from the model's own logits as above;
  when it is the guess (and so its forced tokens are the draft's), the request for them
  is skipped and the guess's logits are used. They are good until the loop's next
  request, which may write over the draft's positions, so only the request right after
  them may be skipped. Drafts change the number of passes, not the draw (to the rounding
  of a pass of several tokens, as for jump-forward).
- The prompt is evaluated once per call, whatever the number of attempts: each attempt
  starts at the prompt's end with its saved logits, and its first request drops what the
  attempt before it wrote.
- Budgets: at most `ITEM_REDRAWS` redraws in a row for one item and `ATTEMPT_REDRAWS` in
  all. Past that, an attempt that is not the `last` stops with finish reason "rejected"
  (its answer could no longer pass); the last one keeps the item and finishes unchecked,
  so an answer of the declared type always comes back.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from byllm_distill.runtime.draft import Drafter
from byllm_distill.runtime.forced import Forced
from byllm_distill.runtime.guide import Guide

TOP_K = 64  # sampling draws from at most this many of the best tokens
NEGLIGIBLE = math.log(1e4)  # ... each at least 1e-4 as likely as the best one
ITEM_REDRAWS = 4  # an item failing prefix checks is drawn again at most this often in a row
ATTEMPT_REDRAWS = 24  # ... and at most this often per attempt
REDRAW_HEAT = 0.7  # a whole-item redraw samples at least this hot, a little hotter each time


@dataclass(frozen=True)
class Eval:
    """A request to the model: `tokens` into the call's sequence from `pos` on (whatever
    it held from there is dropped); the answer is the logits after the last one. With a
    `draft` (tokens guessed to follow), the driver may put it in the same pass: the
    answer is then an array of two rows, the logits after `tokens` and after `draft`."""

    tokens: list[int]
    pos: int
    draft: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Ahead:
    """A draft the model read: `tokens` at `pos` on, and the logits after them. Valid
    until the loop's next request (which may write over those positions)."""

    pos: int
    tokens: list[int]
    logits: Any

    def fits(self, pending: list[int], n_past: int) -> bool:
        return self.pos == n_past and self.tokens == pending


Loop = Generator[Eval, Any, Any]  # yields requests, is sent logits, returns its result


@dataclass
class _Checkpoint:
    """Everything a rollback returns to."""

    tokens: int
    n_past: int
    logits: Any
    grammar: Any
    cursor: Any

    @classmethod
    def take(cls, out: list[int], n_past: int, logits: Any, grammar: Any, guide: Guide,
             owned: list[Any]) -> _Checkpoint:
        return cls(len(out), n_past, logits, clone(grammar, owned), guide.state())

    def grammar_copy(self, owned: list[Any]) -> Any:
        """A fresh copy of the saved grammar state (the saved one stays for the next)."""
        return clone(self.grammar, owned)


def clone(grammar: Any, owned: list[Any]) -> Any:
    """A copy of a grammar sampler's state, added to `owned` (the caller frees those)."""
    import llama_cpp

    if grammar is None:
        return None
    copy = llama_cpp.llama_sampler_clone(grammar)
    owned.append(copy)
    return copy


class _DeadEnd(Exception):
    """No token is allowed here (the grammar and a number's allowed values disagree)."""


class Decoder:
    """Sampling over one model's vocabulary, and the token loop (`attempt`). Its buffers
    are used between two yields only, so the loops of several calls may share it as long
    as one thread runs them (the batcher's)."""

    def __init__(self, llama: Any, max_tokens: int) -> None:
        import llama_cpp
        import numpy as np

        self.llama = llama
        self.max_tokens = max_tokens
        self.vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self.n_vocab = llama.n_vocab()
        self._all = (llama_cpp.llama_token_data * self.n_vocab)()
        self._all_view = np.frombuffer(self._all, dtype=np.dtype(
            [("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        self._all_view["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._digit_tokens: dict[int, str] | None = None
        self._pieces: dict[int, bytes] = {}
        self.forced = Forced(llama)
        self.jump_forward = True  # write what the grammar forces without a step each
        self.drafter: Drafter | None = None  # guesses to read ahead (draft.py)
        self.drafts = self.drafts_taken = 0  # drafts the model read, and sampled as guessed

    # Sampling ----------------------------------------------------------------------------

    def grammar_allows(self, grammar: Any, token: int, logit: float) -> bool:
        import llama_cpp

        self._one[0].id, self._one[0].logit, self._one[0].p = token, logit, 0.0
        candidates = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._one, llama_cpp.llama_token_data_p), size=1, selected=-1,
            sorted=False)
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(candidates))
        return math.isfinite(self._one[0].logit)

    def grammar_filter(self, grammar: Any, logits: Any) -> Any:
        """`logits` with every token the grammar forbids now set to -inf (a copy)."""
        import llama_cpp

        self._all_view["logit"] = logits
        candidates = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._all, llama_cpp.llama_token_data_p), size=self.n_vocab,
            selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(candidates))
        return self._all_view["logit"].copy()

    @staticmethod
    def pick(logits: Any, temperature: float, top_p: float, rng: Any) -> int:
        """Greedy at temperature 0, else a draw from the top-p mass of the best tokens."""
        import numpy as np

        best = int(np.argmax(logits))
        if temperature <= 0.0:
            return best
        if not math.isfinite(logits[best]):
            raise _DeadEnd
        # Tokens this far below the best carry < 1e-4 of its weight; one pass finds the rest
        # (a full argpartition of the vocabulary costs ten times more per token).
        top = np.flatnonzero(logits > logits[best] - temperature * NEGLIGIBLE)
        if len(top) > TOP_K:
            top = top[np.argpartition(logits[top], -TOP_K)[-TOP_K:]]
        top = top[np.argsort(logits[top])[::-1]]
        weights = np.exp((logits[top] - logits[top[0]]) / temperature)
        weights /= weights.sum()
        keep = min(len(top), int(np.searchsorted(np.cumsum(weights), top_p)) + 1)
        weights = weights[:keep] / weights[:keep].sum()
        return int(top[rng.choice(keep, p=weights)])

    def _sample(self, logits: Any, grammar: Any, heat: float, top_p: float, rng: Any) -> int:
        import llama_cpp
        import numpy as np

        token = self.pick(logits, heat, top_p, rng)
        if grammar is not None:
            if not self.grammar_allows(grammar, token, float(logits[token])):
                filtered = self.grammar_filter(grammar, logits)
                if not np.isfinite(filtered).any():
                    raise _DeadEnd
                token = self.pick(filtered, heat, top_p, rng)
            llama_cpp.llama_sampler_accept(grammar, token)
        return token

    # Numbers with allowed values ---------------------------------------------------------

    def digit_tokens(self) -> dict[int, str]:
        """Tokens made only of ASCII digits, by id (built once, on the first repair)."""
        if self._digit_tokens is None:
            found = {}
            for token in range(self.n_vocab):
                text = self.llama.detokenize([token], special=False)
                if text and text.isdigit() and text.isascii():
                    found[token] = text.decode()
            self._digit_tokens = found
        return self._digit_tokens

    def number_mask(self, logits: Any, prefix: str, allowed: frozenset[str]) -> Any:
        """`logits` where only tokens that keep the number on the way to an allowed value
        survive: digits that extend `prefix` towards one, anything else only when `prefix`
        already is one (a copy)."""
        import numpy as np

        digits = self.digit_tokens()
        keep = {t for t, d in digits.items() if any(v.startswith(prefix + d) for v in allowed)}
        if prefix in allowed:
            masked = logits.copy()
            banned = [t for t in digits if t not in keep]
            masked[banned] = -np.inf
            return masked
        masked = np.full_like(logits, -np.inf)
        kept = list(keep)
        masked[kept] = logits[kept]
        return masked

    def piece(self, token: int) -> bytes:
        """A token's bytes (cached: the guide reads every token the loop samples)."""
        found = self._pieces.get(token)
        if found is None:
            found = self._pieces[token] = self.llama.detokenize([token], special=False)
        return found

    # The loop ----------------------------------------------------------------------------

    def attempt(self, n_prompt: int, logits: Any, grammar: Any, temperature: float,
                top_p: float, rng: Any, guide: Guide | None = None, last: bool = True
                ) -> Generator[Eval, Any, tuple[list[int], str, int]]:
        """(tokens, finish reason, redraws) for one attempt after the call's prompt of
        `n_prompt` tokens, whose next-token `logits` the caller evaluated once for all
        attempts (see the module docstring). `grammar` is this call's own sampler: the
        loop advances it."""
        import llama_cpp

        n_past = n_prompt
        out: list[int] = []
        owned: list[Any] = []  # grammar clones to free
        item: _Checkpoint | None = None  # after the last item that passed
        before: _Checkpoint | None = None  # before the current token (a number may start)
        number: _Checkpoint | None = None  # before the last number's first token
        allowed: frozenset[str] | None = None  # values the number being redrawn may take
        repaired: _Checkpoint | None = None  # a number is redrawn among passing values once
        in_a_row = redraws = 0
        pending: list[int] = []  # written, not yet evaluated
        forced: list[int] = []  # the grammar's next tokens (forced.py), not yet written
        ends = passed = False  # the answer ends after `forced`; an item passed in `pending`
        ahead: _Ahead | None = None  # the last request's draft, read by the model
        try:
            if guide is not None:
                item = _Checkpoint.take(out, n_past, logits, grammar, guide, owned)
                before = item
            while len(out) < self.max_tokens:
                if forced:
                    token = forced.pop(0)
                    llama_cpp.llama_sampler_accept(grammar, token)
                else:
                    heat = temperature if in_a_row == 0 or allowed is not None else max(
                        temperature, REDRAW_HEAT) * (1.0 + 0.15 * in_a_row)
                    try:
                        shaped = (logits if allowed is None or guide is None
                                  else self.number_mask(logits, guide.number_prefix(),
                                                        allowed))
                        token = self._sample(shaped, grammar, heat, top_p, rng)
                    except _DeadEnd:
                        if allowed is None or item is None or guide is None:
                            raise
                        allowed = number = None  # the repair cannot finish: redraw the item
                        before = item
                        logits, grammar, n_past = self._rollback(item, out, guide, owned)
                        continue
                    if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                        return out, "stop", redraws
                    if self.jump_forward and grammar is not None:
                        forced, ends = self.forced.after(grammar, token)
                out.append(token)
                verdict = None
                if guide is not None:
                    starts = guide.number_prefix() == ""
                    verdict = guide.feed(self.piece(token))
                    if starts and guide.number_prefix():
                        number = before
                    if allowed is not None and not guide.number_prefix():
                        allowed = None  # the redrawn number is complete
                if verdict is False and item is not None and guide is not None:
                    pending, forced, ends, passed = [], [], False, False
                    if in_a_row >= ITEM_REDRAWS or redraws >= ATTEMPT_REDRAWS:
                        if not last:
                            return out, "rejected", redraws
                        guide = item = None  # keep the item and finish unchecked
                    else:
                        in_a_row += 1
                        redraws += 1
                        values = (guide.passing_numbers()
                                  if number is not None and number is not repaired
                                  and number.tokens >= item.tokens else None)
                        if values:  # redraw the last number among the values that pass
                            allowed, before = frozenset(values), number
                            repaired = number
                        else:  # redraw the whole item
                            allowed, before, number = None, item, None
                        logits, grammar, n_past = self._rollback(before, out, guide, owned)
                        continue
                pending.append(token)
                passed = passed or bool(verdict)
                if forced:
                    continue  # one forward pass for the token and what it forces
                if ends:
                    return out, "stop", redraws  # nothing but the end can follow
                if ahead is not None and ahead.fits(pending, n_past):
                    logits, ahead = ahead.logits, None  # the draft's pass is done
                    self.drafts_taken += 1
                else:
                    draft = self._draft(out, grammar, n_past + len(pending),
                                        n_prompt + self.max_tokens)
                    got = yield Eval(pending, n_past, draft)
                    logits, ahead = got, None
                    if getattr(got, "ndim", 1) == 2:  # the draft was read too
                        self.drafts += 1
                        logits, ahead = got[0], _Ahead(n_past + len(pending), list(draft),
                                                       got[1])
                n_past += len(pending)
                pending = []
                if guide is not None:
                    if passed:
                        item = _Checkpoint.take(out, n_past, logits, grammar, guide, owned)
                        before = item
                        in_a_row = 0
                    elif not guide.number_prefix():
                        before = _Checkpoint.take(out, n_past, logits, grammar, guide, owned)
                passed = False
            return out, "length", redraws
        finally:
            for sampler in owned:
                llama_cpp.llama_sampler_free(sampler)

    def _draft(self, out: list[int], grammar: Any, pos: int, limit: int) -> tuple[int, ...]:
        """The drafter's guess at the token after `out` (at `pos`) with what the grammar
        forces after it, or () where there is none, the grammar forbids it, the answer
        would end after it, or it would pass `limit` (the call's KV cells)."""
        import llama_cpp

        guess = self.drafter.guess(out) if self.drafter is not None else None
        if guess is None or grammar is None or llama_cpp.llama_vocab_is_eog(
                self.vocab, guess) or not self.grammar_allows(grammar, guess, 0.0):
            return ()
        forced: list[int] = []
        if self.jump_forward:
            probe = llama_cpp.llama_sampler_clone(grammar)
            try:
                llama_cpp.llama_sampler_accept(probe, guess)
                forced, ends = self.forced.after(probe, guess)
            finally:
                llama_cpp.llama_sampler_free(probe)
            if ends:
                return ()
        draft = (guess, *forced)
        return draft if pos + len(draft) <= limit else ()

    @staticmethod
    def _rollback(to: _Checkpoint, out: list[int], guide: Guide, owned: list[Any]
                  ) -> tuple[Any, Any, int]:
        """Return to `to`: (its logits, a fresh copy of its grammar, its position); the
        next request starts there, so the later KV entries are dropped."""
        del out[to.tokens:]
        guide.restore(to.cursor)
        return to.logits, to.grammar_copy(owned), to.n_past
