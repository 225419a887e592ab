"""CoQA through lm-eval 0.4.13, offline: the harness's own task and a greedy model wrapper with shared prefixes.

Why not lm-eval's stock pieces:

* the stock ``coqa`` task imports ``transformers.data.metrics.squad_metrics``, which transformers 5 removed, and
  loads ``EleutherAI/coqa`` from the hub. :func:`make_task` builds the same task as a ``ConfigurableTask`` from
  a config dict whose ``custom_dataset`` serves documents from :mod:`harness.evals.coqa_data` (the shipped set or
  a local file): same prompt (:func:`~harness.evals.coqa_data.build_prompt`), same ``until: ["\\nQ:"]``, same
  answer extraction (first line of the stripped generation) and the same leave-one-out EM/F1 over the
  case-insensitively de-duplicated gold answers (:mod:`harness.evals.squad_metrics`).
* ``lm_eval.models.huggingface.HFLM`` (which accepts a model instance) imports ``accelerate`` at module level;
  accelerate is in lm-eval's ``hf`` extra, not a dependency of this harness, so the module cannot be imported
  here. :class:`HarnessLM` is a small ``lm_eval.api.model.LM`` with ``generate_until`` only, following HFLM's
  rules: contexts encoded with the tokenizer's default special tokens and left-truncated to leave room for
  ``max_gen_toks``, greedy decoding, stop at any ``until`` string or the EOS token, decode without special
  tokens, cut at the first stop string.

Every turn is scored by default (each with the gold answers of the earlier turns in its prompt, as CoQA's
evaluation does), which gives about 7 items per story instead of lm-eval's one (its last turn); that mode is
``all_turns=False``. The turns of a story share their prompt: turn i's prompt is a prefix of turn i+1's. The
wrapper therefore encodes each story's longest prompt once and decodes every turn from that key/value cache,
masking the positions past its own prompt: about 6x less prompt work on CoQA, the same greedy tokens up to
float rounding (tests/test_evals.py compares with ``model.generate``). A context that is not a token prefix of
another is simply its own root, so any task works.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from lm_eval.api.model import LM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from harness.errors import InvalidArgument
from harness.evals.coqa_data import CoqaStory, build_prompt, data_hash, iter_items
from harness.evals.squad_metrics import exact_match, f1_score, leave_one_out
from harness.report.progress import progress_bar

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_GEN_TOKS",
    "STOP_SEQUENCES",
    "TASK_NAME",
    "CoqaResult",
    "HarnessLM",
    "coqa_docs",
    "extract_answer",
    "greedy_generate",
    "items_hash",
    "make_task",
    "paired_difference",
    "run_coqa",
    "score_answer",
]

TASK_NAME = "fourbit_coqa"
STOP_SEQUENCES = ("\nQ:",)
"""lm-eval's CoQA ``until``."""
DEFAULT_MAX_GEN_TOKS = 24
"""CoQA answers are a few words; lm-eval keeps only the first line, so 24 tokens lose almost nothing."""
DEFAULT_BATCH_SIZE = 32
"""Rows decoded together (turns of several stories): decode steps on these CPUs cost ~70 ms plus compute per
row, so fewer, wider steps are cheaper; 32 rows hold ~0.6 GB of key/value cache for CoQA-length prompts."""


# ---------------------------------------------------------------------------------------------- the task


def coqa_docs(stories: Sequence[CoqaStory], *, all_turns: bool = True) -> list[dict[str, Any]]:
    """One lm-eval document per scored turn: its id, prompt and gold answers (the first annotator's first)."""
    return [
        {
            "id": f"{story.id}#{turn_index + 1}",
            "story_id": story.id,
            "turn": turn_index + 1,
            "prompt": build_prompt(story, turn_index),
            "answers": list(story.turns[turn_index].answers),
        }
        for story, turn_index in iter_items(stories, all_turns=all_turns)
    ]


def extract_answer(generation: str) -> str:
    """What lm-eval's CoQA scores: the first line of the stripped generation."""
    return generation.strip().split("\n")[0]


def score_answer(generation: str, answers: Sequence[str]) -> dict[str, float]:
    """lm-eval's CoQA ``compute_scores``: leave-one-out EM and F1 of the extracted answer over the golds."""
    prediction = extract_answer(generation)
    return {
        "em": leave_one_out(exact_match, prediction, answers),
        "f1": leave_one_out(f1_score, prediction, answers),
    }


def _doc_to_text(doc: dict[str, Any]) -> str:
    return str(doc["prompt"])


def _doc_to_target(doc: dict[str, Any]) -> list[str]:
    return list(doc["answers"])


def _process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    return score_answer(results[0], doc["answers"])


def make_task(stories: Sequence[CoqaStory], *, all_turns: bool = True, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS) -> Any:
    """The CoQA task as an lm-eval ``ConfigurableTask`` built from a config dict (nothing is downloaded)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    if not stories:
        raise InvalidArgument("stories=[], expected at least one CoQA story")
    if not isinstance(max_gen_toks, int) or isinstance(max_gen_toks, bool) or max_gen_toks < 1:
        raise InvalidArgument(f"max_gen_toks={max_gen_toks!r}, expected a positive int such as 24")
    docs = coqa_docs(stories, all_turns=all_turns)

    def custom_dataset(**_: Any) -> dict[str, Any]:
        return {"test": datasets.Dataset.from_list(docs)}

    config = {
        "task": TASK_NAME,
        "custom_dataset": custom_dataset,
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": _doc_to_text,
        "doc_to_target": _doc_to_target,
        "process_results": _process_results,
        "num_fewshot": 0,
        "generation_kwargs": {"until": list(STOP_SEQUENCES), "do_sample": False, "max_gen_toks": max_gen_toks},
        "metric_list": [
            {"metric": "em", "aggregation": "mean", "higher_is_better": True},
            {"metric": "f1", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0, "all_turns": all_turns},
    }
    return ConfigurableTask(config=config)


# ---------------------------------------------------------------------------------------------- generation


def _cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise InvalidArgument(
            f"the model returned a {type(cache).__name__} cache, expected transformers' DynamicCache "
            "(decoder-only models such as Llama, Mistral, Qwen)"
        )
    return [(layer.keys, layer.values) for layer in layers]


def _prefix_roots(encoded: Sequence[list[int]]) -> tuple[list[int], list[int]]:
    """For each context, the index of a longest context it is a token prefix of (itself if none).

    Returns (roots in decreasing length, root of each context)."""
    order = sorted(range(len(encoded)), key=lambda index: (-len(encoded[index]), index))
    roots: list[int] = []
    root_of = [0] * len(encoded)
    for index in order:
        tokens = encoded[index]
        for root in roots:
            if encoded[root][: len(tokens)] == tokens:
                root_of[index] = root
                break
        else:
            roots.append(index)
            root_of[index] = index
    return roots, root_of


def _stopped(text: str, until: Sequence[str]) -> bool:
    return any(term and term in text for term in until)


def _finished(text: str, until: Sequence[str], first_line: bool) -> bool:
    """Whether a row may stop: a stop string appeared, or (``first_line``) its first non-blank line ended."""
    return _stopped(text, until) or (first_line and "\n" in text.lstrip())


def _cut(text: str, until: Sequence[str]) -> str:
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


@torch.inference_mode()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    *,
    until: Sequence[str],
    max_gen_toks: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    first_line: bool = False,
) -> list[str]:
    """Greedy continuations of ``contexts``, cut at the first ``until`` string (HFLM's generate_until rules).

    Contexts that are token prefixes of a longer one share its prompt pass (see the module docstring). Each
    batch prefills up to ``batch_size`` rows' worth of root contexts (right-padded, causal: padding is never
    seen) and decodes those rows together, each with its own positions and a mask hiding the root's tokens
    past its own prompt.

    ``first_line=True`` also stops a row once its text has a line break after some non-blank text: for a
    task that scores only the first line of the stripped answer (CoQA) the scored answer is then already
    fixed, and rows that would run on to ``max_gen_toks`` without a stop string cost nothing more. The
    returned text is then shorter than HFLM's, its first line identical."""
    if batch_size < 1:
        raise InvalidArgument(f"batch_size={batch_size!r}, expected a positive int")
    eos_id = tokenizer.eos_token_id
    limit = max_length or getattr(model.config, "max_position_embeddings", None) or 2048
    room = limit - max_gen_toks
    if room < 1:
        raise InvalidArgument(f"max_gen_toks={max_gen_toks} leaves no room for a context in {limit} positions")
    encoded = [list(tokenizer(context)["input_ids"])[-room:] for context in contexts]
    if any(not tokens for tokens in encoded):
        raise InvalidArgument("a context encodes to no tokens, expected a non-empty prompt")
    roots, root_of = _prefix_roots(encoded)
    members: dict[int, list[int]] = {root: [] for root in roots}
    for index, root in enumerate(root_of):
        members[root].append(index)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_id or 0)
    device = next(model.parameters()).device
    outputs: list[str] = [""] * len(contexts)
    start = 0
    with progress_bar("CoQA: generating answers", len(contexts)) as advance:
        while start < len(roots):
            group = [roots[start]]
            rows = len(members[roots[start]])
            start += 1
            while start < len(roots) and rows + len(members[roots[start]]) <= batch_size:
                rows += len(members[roots[start]])
                group.append(roots[start])
                start += 1
            _generate_group(
                model,
                tokenizer,
                encoded,
                group,
                members,
                outputs,
                until,
                max_gen_toks,
                batch_size,
                pad_id,
                eos_id,
                device,
                first_line,
            )
            advance(rows)
    return outputs


def _generate_group(
    model: Any,
    tokenizer: Any,
    encoded: Sequence[list[int]],
    group: list[int],
    members: dict[int, list[int]],
    outputs: list[str],
    until: Sequence[str],
    max_gen_toks: int,
    batch_size: int,
    pad_id: int,
    eos_id: int | None,
    device: torch.device,
    first_line: bool,
) -> None:
    from transformers import DynamicCache

    width = max(len(encoded[root]) for root in group)
    input_ids = torch.full((len(group), width), pad_id, dtype=torch.long, device=device)
    for slot, root in enumerate(group):
        input_ids[slot, : len(encoded[root])] = torch.tensor(encoded[root], dtype=torch.long)
    rows = [(slot, index) for slot, root in enumerate(group) for index in members[root]]
    last_positions = sorted({len(encoded[index]) - 1 for _, index in rows})
    keep = torch.tensor(last_positions, dtype=torch.long, device=device)
    prefill = model(input_ids=input_ids, use_cache=True, logits_to_keep=keep)
    column = {position: column for column, position in enumerate(last_positions)}
    first_tokens = [int(prefill.logits[slot, column[len(encoded[index]) - 1]].argmax()) for slot, index in rows]
    root_layers = _cache_layers(prefill.past_key_values)
    del prefill
    for chunk_start in range(0, len(rows), batch_size):
        chunk = rows[chunk_start : chunk_start + batch_size]
        tokens = first_tokens[chunk_start : chunk_start + batch_size]
        lengths = [len(encoded[index]) for _, index in chunk]
        prompt_width = max(lengths)
        slots = torch.tensor([slot for slot, _ in chunk], dtype=torch.long, device=device)
        cache = DynamicCache(
            ddp_cache_data=[
                (keys.index_select(0, slots)[:, :, :prompt_width], values.index_select(0, slots)[:, :, :prompt_width])
                for keys, values in root_layers
            ]
        )
        mask = torch.zeros((len(chunk), prompt_width), dtype=torch.long, device=device)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        positions = torch.tensor(lengths, dtype=torch.long, device=device).unsqueeze(1)
        generated: list[list[int]] = [[] for _ in chunk]
        done = [False] * len(chunk)
        alive = list(range(len(chunk)))  # rows still in the batch, in batch order
        for step in range(max_gen_toks):
            for slot, row in enumerate(alive):
                if done[row]:
                    continue  # finished, not yet dropped: its tokens are ignored
                generated[row].append(tokens[slot])
                text = tokenizer.decode(generated[row], skip_special_tokens=True)
                done[row] = tokens[slot] == eos_id or _stopped(text, until) or (first_line and "\n" in text.lstrip())
            live = [slot for slot, row in enumerate(alive) if not done[row]]
            if not live or step == max_gen_toks - 1:
                break
            if 4 * (len(alive) - len(live)) >= len(alive):  # drop finished rows once a quarter are done
                live_rows = torch.tensor(live, dtype=torch.long, device=device)
                cache = DynamicCache(
                    ddp_cache_data=[
                        (keys.index_select(0, live_rows), values.index_select(0, live_rows))
                        for keys, values in _cache_layers(cache)
                    ]
                )
                mask, positions = mask.index_select(0, live_rows), positions.index_select(0, live_rows)
                alive = [alive[slot] for slot in live]
                tokens = [tokens[slot] for slot in live]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long, device=device)], 1)
            out = model(
                input_ids=torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1),
                attention_mask=mask,
                position_ids=positions + step,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            tokens = out.logits[:, -1].argmax(-1).tolist()
        for (_, index), row_tokens in zip(chunk, generated, strict=True):
            text = tokenizer.decode(row_tokens, skip_special_tokens=True)
            outputs[index] = _cut(text, until)


class HarnessLM(LM):
    """An lm-eval model over a loaded transformers model and its tokenizer: ``generate_until`` (greedy) only."""

    def __init__(
        self, model: Any, tokenizer: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, first_line: bool = False
    ) -> None:
        """``first_line``: stop each generation at the end of its first non-blank line (see
        :func:`greedy_generate`); for tasks that score only that line, such as CoQA."""
        super().__init__()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidArgument(f"batch_size={batch_size!r}, expected a positive int such as 16")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.first_line = first_line

    @property
    def eot_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError("HarnessLM only generates (generate_until); CoQA needs nothing else")

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        raise NotImplementedError("HarnessLM only generates (generate_until); CoQA needs nothing else")

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, requests grouped by their generation kwargs as HFLM groups them."""
        results: list[str] = [""] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        eos = None if self.eot_token_id is None else self.tokenizer.decode([self.eot_token_id])
        for indices in groups.values():
            kwargs = normalize_gen_kwargs(requests[indices[0]].args[1], 256)
            if kwargs.get("do_sample"):
                raise InvalidArgument(f"generation kwargs {dict(kwargs)!r}: HarnessLM decodes greedily only")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            texts = greedy_generate(
                self.model,
                self.tokenizer,
                [requests[index].args[0] for index in indices],
                until=until,
                max_gen_toks=int(kwargs["max_gen_toks"]),
                batch_size=self.batch_size,
                first_line=self.first_line,
            )
            for index, text in zip(indices, texts, strict=True):
                results[index] = text
                self.cache_hook.add_partial("generate_until", requests[index].args, text)
        return results


# ---------------------------------------------------------------------------------------------- running


def items_hash(stories: Sequence[CoqaStory], *, all_turns: bool) -> str:
    """The data hash of the stories, bound to which turns are scored (different modes are different items)."""
    mode = "all-turns" if all_turns else "last-turn"
    return hashlib.sha256(f"{data_hash(stories)}|{mode}".encode()).hexdigest()


@dataclass(frozen=True)
class CoqaResult:
    """Per-item CoQA scores (file order of stories, then turns) with their means and bootstrap CIs."""

    ids: tuple[str, ...]
    predictions: tuple[str, ...]
    f1: np.ndarray
    em: np.ndarray
    f1_ci: tuple[float, float]
    em_ci: tuple[float, float]
    data_hash: str
    all_turns: bool
    seconds: float
    lm_eval_metrics: dict[str, float] = field(default_factory=dict)
    """lm-eval's own aggregates (``f1,none``, ``em,none``): equal to the means here."""

    @property
    def f1_mean(self) -> float:
        return float(self.f1.mean())

    @property
    def em_mean(self) -> float:
        return float(self.em.mean())


def run_coqa(
    model: Any,
    tokenizer: Any,
    stories: Sequence[CoqaStory],
    *,
    all_turns: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    lm: Any = None,
    confidence: float = 0.95,
) -> CoqaResult:
    """Evaluate ``model`` on ``stories`` through lm-eval's evaluator with :func:`make_task` and return per-item
    scores. ``lm`` replaces the model wrapper (tests pass a stub whose answers they control)."""
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    from harness.evals.models import set_offline
    from harness.results.stats import bootstrap_ci

    set_offline()
    start = time.perf_counter()
    task = make_task(stories, all_turns=all_turns, max_gen_toks=max_gen_toks)
    # CoQA scores the first line only, so generation may stop there (same scores, fewer decode steps)
    wrapper = lm if lm is not None else HarnessLM(model, tokenizer, batch_size=batch_size, first_line=True)
    task_dict = TaskManager(include_defaults=False).load([task])
    output = evaluate(lm=wrapper, task_dict=task_dict, bootstrap_iters=0, log_samples=True)
    if output is None:
        raise InvalidArgument("lm-eval returned no results (not rank 0?)")
    samples = sorted(output["samples"][TASK_NAME], key=lambda sample: sample["doc_id"])
    docs = coqa_docs(stories, all_turns=all_turns)
    if len(samples) != len(docs):
        raise InvalidArgument(f"lm-eval scored {len(samples)} of {len(docs)} CoQA items")
    f1 = np.array([float(sample["f1"]) for sample in samples])
    em = np.array([float(sample["em"]) for sample in samples])
    metrics = {
        key: float(value)
        for key, value in output["results"][TASK_NAME].items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }

    def interval(values: np.ndarray) -> tuple[float, float]:
        if values.size < 2:
            return (math.nan, math.nan)
        return bootstrap_ci(values, confidence=confidence)

    return CoqaResult(
        ids=tuple(doc["id"] for doc in docs),
        predictions=tuple(extract_answer(sample["filtered_resps"][0]) for sample in samples),
        f1=f1,
        em=em,
        f1_ci=interval(f1),
        em_ci=interval(em),
        data_hash=items_hash(stories, all_turns=all_turns),
        all_turns=all_turns,
        seconds=time.perf_counter() - start,
        lm_eval_metrics=metrics,
    )


def paired_difference(
    current: np.ndarray, reference: np.ndarray, *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of per-item ``current - reference`` and its paired bootstrap CI (same items, same order)."""
    from harness.results.stats import bootstrap_ci

    current = np.asarray(current, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if current.shape != reference.shape:
        raise InvalidArgument(
            f"current has {current.size} items and reference {reference.size}, expected the same items in order"
        )
    difference = current - reference
    low, high = bootstrap_ci(difference, confidence=confidence) if difference.size > 1 else (math.nan, math.nan)
    return float(difference.mean()), low, high
