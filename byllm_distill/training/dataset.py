"""Per-call-site training sets with compact prompts.

Contract. `build_dataset(store, site, ...)` reads the site's successful records (only those
whose every validator passed when `filtered`, the default) of one contract fingerprint (the
newest, unless told), and makes one example per record:

- prompt and target: written by the site's codec (`codec/site.py`), mined from the training
  records: the arguments as JSON without the key names that never change, and the answer
  as compact value lists (or compact JSON, or text), leaving out fields copied from the
  arguments. The codec goes into the manifest; serving reads and writes through it, so
  inference sees the text training saw. The student's prompt at inference is built from
  `capture.args_json(mt_run)`, the very shape stored in `Record.args`.
- inputs: what of the arguments the student reads (`inputs.py`): paths the records show do
  not change the teacher's answers are left out or cut to their most recent items, as is
  whatever jac.toml names (`drop_inputs`, `keep_last`); then a prompt over the site's
  budget (derived from `max_length` and the longest answer, or `prompt_budget`) has its
  lists cut to their newest items until it fits, and a record that cannot fit is left
  out. One long record never stops a site from training; the manifest counts and lists
  the records compacted and left out, and records the policy with its measurements.
- chat messages: an empty system message (it stops chat templates such as SmolLM2's from
  inserting their default persona), the compact prompt as the user turn, and the target as
  the assistant turn.

Examples are deduplicated on (arguments, output), keeping the oldest record. The split
follows the call's input, not the record: every record of one input goes to the held-out
split when `sha256(f"{seed}:{input_hash}")` falls below `holdout` (`Record.input_hash`:
the site and the canonical arguments), so a record's split never changes as records are
added, one corpus always gives the same split, and no input is both trained on and held
out (held-out scores never measure memorisation). Splitting by record instead would drop
every record of an input that repeats (the first level of a run is asked with the same
arguments in every run) from training whenever one of its records was held out. The
manifest lists the record ids of every split and of what was dropped, the options, counts,
a content hash, and token statistics (teacher prompt through the base model's chat
template versus the compact prompt). `Dataset.write(dir)` exports `train.jsonl` and
`heldout.jsonl` (`{"messages": [...]}` per line, in manifest id order)
and `manifest.json`; the folder appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byllm_distill.agreement import leaves
from byllm_distill.codec.site import SiteCodec
from byllm_distill.serialize import dumps_canonical
from byllm_distill.store import Record, RecordFilter, Store
from byllm_distill.store.record import utc_now
from byllm_distill.training import TrainingError
from byllm_distill.training.chat import SYSTEM_PROMPT, count_tokens, prompt_counter, render_prompt
from byllm_distill.training.inputs import choose, leaf_similarity

FORMAT_VERSION = 4  # 3: the input policy (what the budget did to each record); 4: split by input
DEFAULT_MAX_LENGTH = 1024  # the trainer's default tokens per example


@dataclass(frozen=True)
class Example:
    record_id: str
    prompt: str
    target: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": self.target}]


@dataclass
class Dataset:
    site: str
    fingerprint: str
    response_format: dict[str, Any] | None
    train: list[Example]
    heldout: list[Example]
    manifest: dict[str, Any]
    codec: SiteCodec
    heldout_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def content_sha256(self) -> str:
        return self.manifest["content_sha256"]

    def write(self, out_dir: Path) -> Path:
        """Write train.jsonl, heldout.jsonl and manifest.json into `out_dir` atomically."""
        out_dir = Path(out_dir)
        partial = out_dir.with_name(out_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            for name, rows in (("train", self.train), ("heldout", self.heldout)):
                with (partial / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
                    for example in rows:
                        fh.write(json.dumps({"messages": example.messages()},
                                            ensure_ascii=False) + "\n")
            (partial / "manifest.json").write_text(json.dumps(self.manifest, indent=2))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.rename(partial, out_dir)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self.path = out_dir
        return out_dir


def split_of(input_hash: str, seed: int, holdout: float) -> str:
    """"heldout" or "train", from a hash of the call's input alone (`Record.input_hash`;
    stable as data grows, the same for every record of one input)."""
    digest = hashlib.sha256(f"{seed}:{input_hash}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < holdout else "train"


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "max": 0.0}
    return {"mean": round(statistics.fmean(values), 1), "p50": statistics.median(values),
            "max": max(values)}


def derive_budget(max_length: int, target_max: int, context: int | None) -> int:
    """The longest student prompt a site allows: room for its longest answer within the
    training length (and the base model's context), never below a quarter of it."""
    room = max_length - target_max - 1
    if context:
        room = min(room, context - target_max - 1)
    return max(max_length // 4, room)


def _billed(record: Record) -> int | None:
    usage = record.usage or {}
    value = usage.get("prompt_tokens", usage.get("input_tokens"))
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def token_stats(tokenizer: Any, records: Iterable[Record], examples: Iterable[Example],
                schema: dict[str, Any] | None, count: Callable[[str], int]) -> dict[str, Any]:
    """Prompt tokens per example (each one's record among `records`): what the teacher was
    sent (its messages through the base model's chat template, and what its provider billed
    where the record has usage) versus the student's whole prompt; plus targets.
    `schema` is the response format the teacher got."""
    by_id = {r.id: r for r in records}
    before, after, target, billed = [], [], [], []
    for example in examples:
        record = by_id[example.record_id]
        before.append(count_tokens(tokenizer, render_prompt(tokenizer, record.messages or [])))
        after.append(count(example.prompt))
        target.append(count_tokens(tokenizer, example.target) + 1)
        if (paid := _billed(record)) is not None:
            billed.append(paid)
    schema_tokens = count_tokens(tokenizer, json.dumps(schema)) if schema else 0
    mean_before, mean_after = _summary(before)["mean"], _summary(after)["mean"]
    return {
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "teacher_prompt": _summary(before),
        "teacher_schema": schema_tokens,
        "teacher_billed": _summary(billed) if billed else None,
        "compact_prompt": _summary(after),
        "target": _summary(target),
        "compaction_ratio": round(mean_before / mean_after, 2) if mean_after else None,
        "compaction_ratio_with_schema": (round((mean_before + schema_tokens) / mean_after, 2)
                                         if mean_after else None),
    }


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("byllm-distill", "byllm", "jaclang", "transformers", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def build_dataset(store: Store, site: str, filtered: bool = True, holdout: float = 0.2,
                  seed: int = 0, out_dir: Path | None = None, tokenizer: Any = None,
                  fingerprint: str | None = None, base: str | None = None,
                  enum_names: bool = True, max_length: int = DEFAULT_MAX_LENGTH,
                  drop_inputs: tuple[str, ...] = (), keep_last: dict[str, int] | None = None,
                  prompt_budget: int | None = None) -> Dataset:
    """The training set of one call site (see the module docstring).

    `tokenizer` counts tokens; when None the base model's (`base`, default the embedded
    SmolLM2) is loaded. `fingerprint` None means the newest contract's. `max_length` is
    the trainer's tokens per example, from which the prompt budget is derived unless
    `prompt_budget` is given; `drop_inputs` / `keep_last` are the site's jac.toml choices.
    """
    if not 0.0 <= holdout < 1.0:
        raise TrainingError(f"holdout must be in [0, 1), got {holdout!r}.")
    # Only the teacher's answers teach: student, shadow and eval records are the student's.
    flt = (RecordFilter(site=site, source="teacher", status="ok", valid=True) if filtered
           else RecordFilter(site=site, source="teacher", status="ok"))
    if not fingerprint:
        newest = next(store.iter_records(flt, limit=1, newest_first=True, with_verdicts=False),
                      None)
        fingerprint = newest.fingerprint if newest else None
    # One streaming pass, oldest first: only the contract's distinct usable records stay in
    # memory, the rest are counted (ids of those dropped are kept for the manifest).
    n_records = n_current = 0
    response_format: dict[str, Any] | None = None
    kept: dict[tuple[str, str], Record] = {}
    duplicates, no_output = [], []
    for record in store.iter_records(flt, with_verdicts=False):
        n_records += 1
        if record.fingerprint != fingerprint:
            continue
        n_current += 1
        response_format = record.schema
        if record.output is None and record.output_raw is None:
            no_output.append(record.id)
            continue
        key = (dumps_canonical(record.args), dumps_canonical(_answer(record)))
        if key in kept:
            duplicates.append(record.id)
        else:
            kept[key] = record
    if not n_records:
        what = "valid " if filtered else ""
        hint = (" (or pass --unfiltered to use records that failed a validator)"
                if filtered and store.count(RecordFilter(site=site, source="teacher",
                                                         status="ok")) else "")
        raise TrainingError(f"no {what}records for call site {site!r}{hint}; run the program "
                            "with capture on, or check the name with `byllm-distill sites`.")
    if not n_current:
        raise TrainingError(f"no records of contract {fingerprint!r} for call site {site!r}; "
                            "see the contracts with `byllm-distill sites`.")
    held = [r for r in kept.values() if split_of(r.input_hash(), seed, holdout) == "heldout"]
    taught = [r for r in kept.values() if split_of(r.input_hash(), seed, holdout) == "train"]
    if not taught:
        raise TrainingError(f"all {len(kept)} usable records of {site!r} fell in the held-out "
                            "split; capture more calls or lower --holdout.")
    if tokenizer is None:
        from byllm_distill.training.base_model import load_tokenizer, resolve_base

        tokenizer = load_tokenizer(resolve_base(base))
    answers = [_answer(r) for r in taught]
    codec = SiteCodec.mine([r.args for r in taught], answers, response_format,
                           enum_names=enum_names)
    policy = choose(site, [r.args for r in taught], answers, drop=drop_inputs,
                    keep_last=keep_last, seed=seed, linked=codec.linked_args())
    if policy.drop or policy.keep_last:  # the codec of what the student reads
        codec = SiteCodec.mine([policy.apply(r.args) for r in taught], answers,
                               response_format, enum_names=enum_names)
    codec.inputs = policy
    targets = {r.id: codec.encode(_answer(r)) for r in [*taught, *held]}
    target_max = max(count_tokens(tokenizer, t) + 1 for t in targets.values())
    context = getattr(tokenizer, "model_max_length", None)
    policy.budget = prompt_budget or derive_budget(
        max_length, target_max, context if isinstance(context, int) and context < 10**6
        else None)
    count = prompt_counter(tokenizer)
    fitted: dict[str, list[str]] = {"compacted": [], "over_budget": []}
    train, heldout = [], []
    for split, rows in ((train, taught), (heldout, held)):
        for r in rows:
            prompt, action = codec.fit_prompt(r.args, count)
            if action == "over":
                fitted["over_budget"].append(r.id)
                continue
            if action == "compacted":
                fitted["compacted"].append(r.id)
            split.append(Example(r.id, prompt, targets[r.id]))
    if not train:
        raise TrainingError(f"every training record of {site!r} is over the prompt budget of "
                            f"{policy.budget} tokens even with its lists emptied; raise "
                            "prompt_budget or max_length, or drop inputs (drop_inputs in "
                            "jac.toml).")
    content = hashlib.sha256(dumps_canonical(
        {"train": [[e.prompt, e.target] for e in train],
         "heldout": [[e.prompt, e.target] for e in heldout],
         "codec": codec.to_dict()}).encode()).hexdigest()
    manifest = {
        "kind": "dataset",
        "format_version": FORMAT_VERSION,
        "site": site,
        "fingerprint": fingerprint,
        "created_at": utc_now(),
        "options": {"filtered": filtered, "holdout": holdout, "seed": seed,
                    "fingerprint": fingerprint, "enum_names": enum_names},
        "prompt": {"compact": "the arguments as JSON, fixed key sets elided (codec/site.py)",
                   "system": SYSTEM_PROMPT},
        "target": {"text": "raw string", "json": "compact JSON, keys in grammar order",
                   "tuple": "value lists in schema order, copied fields left out"}[codec.mode],
        "codec": codec.to_dict(),
        "counts": {"records": n_records, "other_fingerprints": n_records - n_current,
                   "no_output": len(no_output), "duplicates": len(duplicates),
                   "compacted": len(fitted["compacted"]),
                   "over_budget": len(fitted["over_budget"]), "train": len(train),
                   "heldout": len(heldout)},
        "record_ids": {"train": [e.record_id for e in train],
                       "heldout": [e.record_id for e in heldout],
                       "duplicates": duplicates,
                       "no_output": no_output, **fitted},
        "content_sha256": content,
        "inputs": {"policy": policy.describe(), "budget": policy.budget,
                   "max_length": max_length, "chosen": policy.chosen},
        "tokens": token_stats(tokenizer, kept.values(), [*train, *heldout], response_format,
                              count),
        "response_format": response_format,
        "library_versions": _library_versions(),
    }
    by_id = {r.id: r for r in held}
    dataset = Dataset(site, fingerprint, response_format, train, heldout, manifest, codec,
                      heldout_args={e.record_id: by_id[e.record_id].args for e in heldout})
    if out_dir is not None:
        dataset.write(out_dir)
    return dataset


def _answer(record: Record) -> Any:
    return record.output if record.output is not None else record.output_raw


def load_dataset(folder: Path) -> Dataset:
    """A dataset written by `Dataset.write` (arguments of held-out records not included)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        splits = {}
        for name in ("train", "heldout"):
            ids = manifest["record_ids"][name]
            lines = (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            if len(lines) != len(ids):
                raise ValueError(f"{name}.jsonl has {len(lines)} lines, manifest lists "
                                 f"{len(ids)} ids")
            rows = [json.loads(line)["messages"] for line in lines]
            splits[name] = [Example(rid, m[1]["content"], m[2]["content"])
                            for rid, m in zip(ids, rows, strict=True)]
        codec = SiteCodec.from_dict(manifest.get("codec"))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise TrainingError(f"{folder} is not a complete dataset ({exc}); rebuild it with "
                            "`byllm-distill dataset build SITE`.") from exc
    return Dataset(manifest["site"], manifest["fingerprint"], manifest.get("response_format"),
                   splits["train"], splits["heldout"], manifest, codec, path=folder)


def args_similarity(a: dict[str, Any], b: dict[str, Any]) -> float:
    """0..1: shared leaves weighted by closeness (numbers by relative difference)."""
    return leaf_similarity(leaves(a), leaves(b))


def nearest_record(store: Store, site: str, args: dict[str, Any]) -> tuple[Record, float] | None:
    """The teacher record of `site` whose arguments are most like `args`."""
    best: tuple[Record, float] | None = None
    for record in store.iter_records(RecordFilter(site=site, status="ok", source="teacher"),
                                     with_verdicts=False):
        score = args_similarity(args, record.args)
        if best is None or score > best[1]:
            best = (record, score)
    return best
