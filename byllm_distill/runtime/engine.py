"""Serve one call site's student from its GGUF with llama-cpp-python (no byLLM needed).

Contract. `engine_for(site, ...)` returns the site's `Engine`, loading it on first use:
the version's files are checked against the sha256s in its manifest, then its weights are
loaded (models.py: the merged GGUF, one `Llama` per path, shared; or with `serving =
"adapter"` the site's LoRA adapter over the data dir's shared base `Llama`, switched in
for each call's turn) and the grammar is built from the bounded schema the manifest
carries. Only a fully loaded engine enters the cache: a missing, changed or
corrupt file raises `ArtifactError` naming the file and the fix, and the cache holds
nothing for that site afterwards. `Engine.generate(args)` builds the prompt with the
version's codec and prompt format (so inference sees the text training saw, see
`codec/site.py`), decodes under a grammar (for tuple codecs one built for this call's
arguments by `codec/grammar.py`: exact item counts and coordinate ranges where the
teacher's data showed them; for JSON codecs the bounded schema's), so answers always end
and always parse, and decodes the text back into the site's JSON answer. The prompt follows
the codec's input policy: a call over the site's prompt budget has its list arguments cut to
their newest items, as training did (`PromptOverBudget` when even that does not fit).
A call's prompt is evaluated once, whatever the number of attempts: later attempts start
from its saved logits. The decoder reads ahead with guesses drawn from the version's own
training answers (`dataset/train.jsonl`, draft.py; none where that file is missing).
Where the site's grammar writes only a few characters (a map), a merged model scores
only the tokens made of them (head.py; `site_chars`). Decoding samples at the version's
`temperature` (0 is greedy; see pipeline.py for the default). Calls are batched per
`Llama` (batch.py): up to `max_batch` calls answer at once, each in a sequence of its
own, sharing every forward pass; more queue for a turn (load.py), and
`expected_wait_ms()` says how long a call arriving now would queue. Each call decodes
under its own copy of its grammar, so calls never share sampling state.

Guided decoding (sampling only, tuple codecs, sites whose validators name prefix-closed
verdicts): after each top-level field and each array item the student writes, the answer so
far is checked (`guide.py`); an item that fails (an enemy on a wall) is rolled back (model
position, logits, grammar state) and drawn again, a little hotter each time. An attempt
whose item keeps failing stops early, as it could no longer pass; the last attempt keeps
the item instead and finishes, so an answer always parses.

Validator-checked sampling: an answer that fails one of the site's validators (the same
ones the router applies) is drawn again, up to the version's `attempts`; the first answer
that passes is returned, else the last one, which the router then replaces with the
teacher's. `Generation.passed` lists the verdict of each attempt, so evaluation can report
first-attempt validity next to the served one; `Generation.redraws` counts item redraws.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byllm_distill.codec.grammar import call_grammar
from byllm_distill.registry import ArtifactError, SiteRegistry, verify_files
from byllm_distill.runtime.decode import Decoder, Eval, Loop, clone
from byllm_distill.runtime.draft import Drafter
from byllm_distill.runtime.guide import guide_for, student_record
from byllm_distill.runtime.head import grammar_chars
from byllm_distill.runtime.models import Weights, loaded_mb, release, weights_for
from byllm_distill.runtime.spec import StudentSpec

log = logging.getLogger("byllm_distill")
GRAMMAR_CACHE = 32  # built grammars kept per engine (calls often share their limits)
_lock = threading.Lock()
_engines: OrderedDict[str, Engine] = OrderedDict()  # least recently used first


@dataclass(frozen=True)
class Generation:
    """One served answer: `text` is the site's answer as JSON text (the raw text on `str`
    sites, or when it did not decode), `output` the decoded value (None if it did not
    decode), `raw` what the student wrote; tokens and seconds add up every attempt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str
    raw: str = ""
    output: Any = None
    passed: tuple[bool, ...] = ()
    redraws: int = 0  # items drawn again after a prefix check (guide.py)

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def compact_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF grammar of `schema` with whitespace between tokens removed: answers are
    compact JSON, as the student was trained to write them."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    return re.sub(r"(?m)^space ::= .*$", 'space ::= ""', gbnf)


class PromptOverBudget(ValueError):
    """A call's arguments do not fit the site's prompt budget; the teacher answers it."""


class Engine:
    """A loaded student: its weights (models.py: the shared `Llama`, its batcher and the
    site's adapter if any), the codec and the prompt format; `Decoder` (decode.py) writes
    the token loop the batcher drives."""

    def __init__(self, spec: StudentSpec, weights: Weights, requested: str = "merged",
                 drafts: bool = True) -> None:
        import llama_cpp

        self.spec = spec
        self.weights = weights
        self.requested = requested  # the serving mode asked for (weights may be merged)
        self.llama = llama = weights.llama
        self.batcher = weights.batcher
        self.turns = self.batcher.turns
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._decoder = Decoder(llama, spec.max_tokens)
        if drafts:
            self._decoder.drafter = Drafter.from_folder(
                spec.folder, lambda text: llama.tokenize(text.encode(), add_bos=False,
                                                         special=False))
        self.prompt_evals = 0  # prompts evaluated: one per call, whatever its attempts
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._chars: dict[str, frozenset[str] | None] = {}  # grammar text -> what it writes
        weakref.finalize(self, _free_samplers, self._grammars)
        self._fixed_gbnf = (compact_gbnf(spec.codec.schema)
                            if spec.codec.mode == "json" and spec.codec.schema else None)
        if self._fixed_gbnf is not None:
            self._grammar_for(self._fixed_gbnf)  # a bad grammar fails the load, not a call

    @property
    def n_ctx(self) -> int:
        """Tokens one call may hold, its prompt and its answer (the model's KV cells)."""
        return self.weights.resident.n_ctx

    def _tokens(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode(), add_bos=bool(
            self.spec.prompt_format.get("add_bos")), special=True)

    def prompt(self, args: dict[str, Any]) -> tuple[str, list[int]]:
        """The student's whole prompt for `args` and its tokens, fitted to the site's prompt
        budget as training fitted its records (`training/inputs.py`); `PromptOverBudget`
        when it cannot fit even with every list argument emptied."""
        fmt = self.spec.prompt_format
        seen: dict[str, list[int]] = {}

        def count(compact: str) -> int:
            seen[compact] = self._tokens(fmt["prefix"] + compact + fmt["suffix"])
            return len(seen[compact])

        compact, action = self.spec.codec.fit_prompt(args, count)
        if action == "over":
            raise PromptOverBudget(
                f"{self.spec.site}: this call's prompt is over the student's budget of "
                f"{self.spec.codec.inputs.budget} tokens even with its list arguments "
                "emptied; the teacher answers it (drop_inputs in jac.toml, or retrain with "
                "a larger max_length, lets the student read such calls).")
        text = fmt["prefix"] + compact + fmt["suffix"]
        return text, seen.get(compact) or self._tokens(text)

    def gbnf(self, args: dict[str, Any]) -> str | None:
        """The grammar text for a call with `args` (None: free text)."""
        if self.spec.codec.mode == "tuple":
            return call_grammar(self.spec.codec, args)
        return self._fixed_gbnf

    def _grammar_for(self, text: str | None) -> Any:
        """The llama.cpp grammar sampler for a call's grammar `text` (`gbnf(args)`), as
        parsed (never advanced: each call decodes with its own copy, decode.clone)."""
        import llama_cpp

        if text is None:
            return None
        sampler = self._grammars.get(text)
        if sampler is None:
            sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, text.encode(), b"root")
            if not sampler:
                raise ArtifactError(f"the grammar of {self.spec.folder} cannot be built for "
                                    f"these arguments; retrain with `byllm-distill train "
                                    f"{self.spec.site}`.")
            self._grammars[text] = sampler
            if len(self._grammars) > GRAMMAR_CACHE:
                _, oldest = self._grammars.popitem(last=False)
                llama_cpp.llama_sampler_free(oldest)
        self._grammars.move_to_end(text)
        return sampler

    def _chars_of(self, gbnf: str | None) -> frozenset[str] | None:
        """The characters a call's grammar can write, if closed (head.py; cached)."""
        if gbnf is None:
            return None
        if gbnf not in self._chars:
            if len(self._chars) >= GRAMMAR_CACHE:
                self._chars.clear()
            self._chars[gbnf] = grammar_chars(gbnf)
        return self._chars[gbnf]

    def expected_wait_ms(self) -> float:
        """How long a call arriving now would queue before answering (load.py)."""
        return 1000.0 * self.turns.expected_wait_s()

    def generate(self, args: dict[str, Any], temperature: float | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 attempts: int | None = None, check: bool = True,
                 guided: bool = True) -> Generation:
        """The student's answer for one call's arguments (see the module docstring).

        Sampling follows the version's serving settings unless `temperature` / `top_p` /
        `attempts` are given; temperature 0 is greedy (and so makes one attempt). `seed`
        None draws fresh randomness each call. `check=False` skips the validators, and so
        the item checks; `guided=False` skips only the item checks (for comparisons)."""
        import numpy as np

        temperature = self.spec.temperature if temperature is None else temperature
        top_p = self.spec.top_p if top_p is None else top_p
        attempts = self.spec.attempts if attempts is None else max(1, attempts)
        if temperature <= 0.0 or not check:
            attempts = 1
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        text, prompt = self.prompt(args)
        need = len(prompt) + self.spec.max_tokens
        if need > self.n_ctx:
            raise ValueError(f"the prompt of {len(prompt)} tokens leaves no room for a "
                             f"{self.spec.max_tokens}-token answer in n_ctx {self.n_ctx}; "
                             "the input is far larger than anything the student was "
                             "trained on.")
        guide = check and guided and temperature > 0.0
        gbnf = self.gbnf(args)  # built once per call, for every attempt and the head
        answer = self.batcher.run(
            self._answer(args, gbnf, prompt, temperature, top_p, rng, attempts, check, guide),
            self.weights.tag, self.weights.activate, need,
            self._chars_of(gbnf) if self.weights.narrow else None)
        passed, completion, redraws, finish, raw, output, answer_text = answer
        return Generation(text=answer_text, prompt_tokens=len(prompt) * len(passed),
                          completion_tokens=completion,
                          seconds=time.perf_counter() - started, finish_reason=finish, raw=raw,
                          output=output, passed=tuple(passed), redraws=redraws)

    def _answer(self, args: dict[str, Any], gbnf: str | None, prompt: list[int],
                temperature: float, top_p: float, rng: Any, attempts: int, check: bool,
                guide: bool) -> Loop:
        """One call's attempts, as a loop the batcher drives (decode.py); returns (passed
        per attempt, completion tokens, redraws, finish reason, raw text, output, text)."""
        import llama_cpp

        passed: list[bool] = []
        completion = redraws = 0
        owned: list[Any] = []  # this call's grammar copies
        start = yield Eval(list(prompt), 0)
        self.prompt_evals += 1
        try:
            for attempt in range(attempts):
                grammar = clone(self._grammar_for(gbnf), owned)
                tokens, finish, redrawn = yield from self._decoder.attempt(
                    len(prompt), start, grammar, temperature, top_p, rng,
                    guide_for(self.spec.site, self.spec.codec, args, self.spec.response_format)
                    if guide else None,
                    last=attempt == attempts - 1)
                redraws += redrawn
                completion += len(tokens)
                raw = self.llama.detokenize(tokens).decode("utf-8", errors="replace")
                output, answer = self._read(raw, args)
                passed.append(output is not None and (not check or self._passes(args, output)))
                if passed[-1]:
                    break
        finally:
            for sampler in owned:
                llama_cpp.llama_sampler_free(sampler)
        return passed, completion, redraws, finish, raw, output, answer

    def _read(self, raw: str, args: dict[str, Any]) -> tuple[Any, str]:
        """(decoded answer or None, the answer as text)."""
        codec = self.spec.codec
        if codec.mode == "text":
            return raw, raw
        try:
            output = codec.decode(raw, args)
        except ValueError:
            return None, raw
        return output, json.dumps(output, ensure_ascii=False)

    def _passes(self, args: dict[str, Any], output: Any) -> bool:
        """Whether the site's validators accept `output` for `args`."""
        from byllm_distill.validators import registry as validators

        record = student_record(self.spec.site, args, self.spec.response_format, output)
        return all(v.passed for v in validators.validate(record))


def site_chars(spec: StudentSpec) -> frozenset[str] | None:
    """The characters the site's grammar can write whatever the call, if closed (a tuple
    codec's per-call grammars differ in counts and ranges, not in their characters)."""
    try:
        if spec.codec.mode == "tuple":
            return grammar_chars(call_grammar(spec.codec, {}))
        if spec.codec.mode == "json" and spec.codec.schema:
            return grammar_chars(compact_gbnf(spec.codec.schema))
    except (KeyError, TypeError, ValueError) as exc:
        log.info("byllm-distill: %s keeps its whole output layer (%s).", spec.site, exc)
    return None


def _free_samplers(samplers: OrderedDict[str, Any]) -> None:
    import llama_cpp

    while samplers:
        llama_cpp.llama_sampler_free(samplers.popitem()[1])


def engine_for(site: str, data_dir: Path | None = None, version: int | None = None,
               folder: Path | None = None, serving: str | None = None) -> Engine:
    """The site's loaded engine (see the module docstring). Give `folder` to serve a version
    folder directly, else the registry under `data_dir` picks the version. `serving`
    ("merged" or "adapter") defaults to the configured `serving`; `data_dir` holds the
    shared base GGUFs (default: the configured data dir). A load that takes the loaded
    students past the configured `max_resident_mb` then unloads the least recently used
    other engines (their models once no call answers on them)."""
    with _lock:
        cached = _engines.get(site)
        if cached is not None and (folder is None or cached.spec.folder == Path(folder)) and (
                version is None or cached.spec.version == version) and (
                serving is None or cached.requested == serving):
            _engines.move_to_end(site)
            return cached
        # A failed (re)load must leave nothing behind for the site, not the old engine.
        _engines.pop(site, None)
        from byllm_distill.config import load_config

        config = load_config()
        data_dir = config.data_dir if data_dir is None else data_dir
        if folder is None:
            resolved = SiteRegistry.at(Path(data_dir), site).resolve(version)  # verified
            version, folder = resolved.number, resolved.path
        else:
            verify_files(site, Path(folder))
        spec = StudentSpec.from_folder(site, folder, version)
        serving = serving or config.serving
        try:
            chars = site_chars(spec) if config.narrow_head else None
            engine = Engine(spec, weights_for(spec, serving, data_dir, config.max_batch,
                                              chars, config.narrow_head),
                            serving, config.drafts)
        except BaseException:
            _release_unused()
            raise
        _engines[site] = engine
        _within_budget(config.max_resident_mb)
        return engine


def _within_budget(budget_mb: int) -> None:
    """Unload the least recently used engines but the newest until the models still loaded
    fit `budget_mb` (0: no budget; callers hold `_lock`)."""
    while budget_mb and len(_engines) > 1 and loaded_mb(
            [e.weights for e in _engines.values()]) > budget_mb:
        site, _ = _engines.popitem(last=False)
        log.info("byllm-distill: unloaded %s, the least recently used student, to stay "
                 "within max_resident_mb %d.", site, budget_mb)
        _release_unused()


def loaded_sites() -> list[str]:
    """Sites with a loaded engine, least recently used first."""
    with _lock:
        return list(_engines)


def unload(site: str | None = None) -> None:
    """Forget one site's engine (or all); a `Llama` no engine uses any more is freed."""
    with _lock:
        for key in [site] if site is not None else list(_engines):
            _engines.pop(key, None)
        _release_unused()


def _release_unused() -> None:
    """Free the weights no cached engine uses (callers hold `_lock`)."""
    release([e.weights for e in _engines.values()])
