"""CoQA data: load stories from a local file, build the prompts lm-eval builds, hash what was scored.

The harness cannot use lm-eval's stock CoQA task (it imports ``transformers.data.metrics``, gone in
transformers 5) and cannot download the dataset, so it reads CoQA from a file the user names, or the small
set the suites ship (``suites/accuracy/data/coqa_fourbit.json``, written for this project). Two layouts are
read, told apart by content, not by file name:

* the official CoQA JSON: ``{"version": ..., "data": [{"id", "story", "questions": [{"input_text",
  "turn_id"}, ...], "answers": [...], "additional_answers": {"0": [...], ...}}]}``;
* lm-eval's jsonl, one story per line with the fields of the ``EleutherAI/coqa`` dataset: ``{"id",
  "story", "questions": {"input_text": [...], "turn_id": [...]}, "answers": {"input_text": [...], ...},
  "additional_answers": {"0": {"input_text": [...], ...}, ...}}``. The ``stanfordnlp/coqa`` variant (questions
  as a plain list of strings, answers with ``answer_start``/``answer_end``) reads too.

Only the texts matter for scoring; rationale spans are not kept. Every problem in a file raises
:class:`~harness.errors.InvalidArgument` with one line naming the file, the story and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InvalidArgument

__all__ = [
    "SHIPPED_FILENAME",
    "CoqaStory",
    "CoqaTurn",
    "build_prompt",
    "data_hash",
    "default_coqa_path",
    "iter_items",
    "load_coqa",
]

SHIPPED_FILENAME = "coqa_fourbit.json"
"""The set the suites ship, under ``suites/accuracy/data/``."""


@dataclass(frozen=True)
class CoqaTurn:
    """One question of a conversation and every acceptable answer, the first annotator's (the gold) first.

    Later answers that equal an earlier one ignoring case are dropped, as lm-eval's ``doc_to_target`` does,
    so leave-one-out scoring over ``answers`` reproduces lm-eval's numbers."""

    question: str
    answers: tuple[str, ...]

    @property
    def gold(self) -> str:
        """The answer the prompt shows for this turn when a later turn is asked."""
        return self.answers[0]


@dataclass(frozen=True)
class CoqaStory:
    """A passage and the conversation about it, turns in order (each may refer back to earlier ones)."""

    id: str
    story: str
    turns: tuple[CoqaTurn, ...]
    source: str = ""
    """The domain label (mctest, cnn, ... or this project's genres); informative only, not hashed."""


def default_coqa_path() -> Path:
    """The shipped set, in the suites folder that ``fourbit run`` would use (harness.cli.find_suites_dir:
    ``$FOURBIT_SUITES``, ./suites, the suites an installed package carries, or the checkout's beside an editable
    install), so a checkout, an editable install and a wheel each find their file. Absolute, so it stays valid
    if the caller changes directory."""
    from harness.cli import find_suites_dir  # local: keeps the data module importable without the CLI's state

    return (find_suites_dir() / "accuracy" / "data" / SHIPPED_FILENAME).resolve()


def load_coqa(path: str | Path) -> list[CoqaStory]:
    """Read stories from an official CoQA JSON file or an lm-eval jsonl file, whichever ``path`` holds."""
    file = Path(path)
    text = _read_text(file)
    if not text.strip():
        raise InvalidArgument(f"{file}: the file is empty, expected CoQA JSON or jsonl")
    stories = _load_jsonl(file, text) if _looks_like_jsonl(text) else _load_official(file, text)
    if not stories:
        raise InvalidArgument(f"{file}: no stories in the file")
    seen: set[str] = set()
    for story in stories:
        if story.id in seen:
            raise InvalidArgument(f"{file}: story id {story.id!r} appears twice, expected unique ids")
        seen.add(story.id)
    return stories


def build_prompt(story: CoqaStory, turn_index: int) -> str:
    """The text lm-eval's CoQA ``doc_to_text`` gives the model for turn ``turn_index`` (0-based).

    The story, a blank line, each earlier turn as ``Q: question``/``A: gold answer`` (blank line after each),
    then the asked question and ``A:`` with no trailing space, so the model's first token starts the answer.
    Earlier turns show the gold answers, not the model's own, as in CoQA's standard evaluation."""
    if not 0 <= turn_index < len(story.turns):
        raise InvalidArgument(f"turn_index={turn_index!r}, expected 0..{len(story.turns) - 1} for story {story.id!r}")
    history = "".join(f"Q: {turn.question}\n\nA: {turn.gold}\n\n" for turn in story.turns[:turn_index])
    return f"{story.story}\n\n{history}Q: {story.turns[turn_index].question}\n\nA:"


def iter_items(stories: Iterable[CoqaStory], *, all_turns: bool = True) -> Iterator[tuple[CoqaStory, int]]:
    """The (story, turn index) pairs to score, in file order.

    ``all_turns=False`` gives only each story's last turn: what lm-eval's task scores (one item per story,
    with the whole conversation before it as history). ``True`` scores every turn: more items from a small set."""
    for story in stories:
        indices = range(len(story.turns)) if all_turns else range(len(story.turns) - 1, len(story.turns))
        for turn_index in indices:
            yield story, turn_index


def data_hash(stories: Sequence[CoqaStory]) -> str:
    """SHA-256 (hex) of the stories' ids, texts, questions and answers, in order.

    A stored baseline keeps it so a paired comparison refuses to pair scores of different items: any edit to
    a story, question or answer, or a reordering, changes it. The ``source`` label does not take part. The
    serialisation is JSON with sorted keys and no optional whitespace, so it is stable across runs and
    platforms."""
    canonical = [
        {
            "id": story.id,
            "story": story.story,
            "turns": [{"question": turn.question, "answers": list(turn.answers)} for turn in story.turns],
        }
        for story in stories
    ]
    encoded = json.dumps(canonical, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


# --- reading -------------------------------------------------------------------------------------------------


def _read_text(file: Path) -> str:
    if not file.exists():
        raise InvalidArgument(f"{file}: no such file, expected a CoQA JSON or jsonl file")
    if not file.is_file():
        raise InvalidArgument(f"{file}: not a regular file, expected a CoQA JSON or jsonl file")
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise InvalidArgument(f"{file}: cannot be read ({error.strerror or error})") from error
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidArgument(f"{file}: not UTF-8 text (byte {error.start})") from error


def _looks_like_jsonl(text: str) -> bool:
    """jsonl if the first non-blank line is on its own a JSON object that holds a story.

    A pretty-printed official file starts with a line such as ``{`` that does not parse alone; a one-line
    official file parses but has ``data`` rather than ``story``."""
    first_line = next(line for line in text.splitlines() if line.strip())
    try:
        record = json.loads(first_line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and "story" in record


def _load_official(file: Path, text: str) -> list[CoqaStory]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(
            f"{file}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    if not isinstance(document, dict) or "data" not in document:
        raise InvalidArgument(
            f"{file}: top level is {_kind(document)} without 'data', expected the official CoQA layout "
            '{"version": ..., "data": [...]} or lm-eval jsonl (one story object per line)'
        )
    records = document["data"]
    if not isinstance(records, list):
        raise InvalidArgument(f"{file}: 'data' is {_kind(records)}, expected a list of stories")
    stories = []
    for index, record in enumerate(records):
        where = f"{file}: story {index}"
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            where += f" (id={record['id']!r})"
        stories.append(_official_story(record, where))
    return stories


def _official_story(record: Any, where: str) -> CoqaStory:
    record = _require_dict(record, "the story record", where)
    story_id = _require_str(record.get("id"), "'id'", where)
    story_text = _require_text(record.get("story"), "'story'", where)
    source = record.get("source", "")
    source = _require_str(source, "'source'", where)
    questions = _official_turn_list(record.get("questions"), "questions", where)
    if not questions:
        raise InvalidArgument(f"{where}: 'questions' is empty, expected at least one question")
    answers = _official_turn_list(record.get("answers"), "answers", where)
    _check_counts(len(questions), len(answers), "'answers'", where)
    _check_turn_ids(questions, answers, "answers", where)
    alternatives: list[list[tuple[str, int | None]]] = []
    extra = record.get("additional_answers", {})
    extra = _require_dict(extra, "'additional_answers'", where)
    for key, entries in extra.items():
        annotator = _official_turn_list(entries, f"additional_answers[{key!r}]", where)
        _check_counts(len(questions), len(annotator), f"'additional_answers'[{key!r}]", where)
        _check_turn_ids(questions, annotator, f"additional_answers[{key!r}]", where)
        alternatives.append(annotator)
    turns = tuple(
        CoqaTurn(question=question, answers=_unique_answers([answers[i][0]] + [alt[i][0] for alt in alternatives]))
        for i, (question, _) in enumerate(questions)
    )
    return CoqaStory(id=story_id, story=story_text, turns=turns, source=source)


def _official_turn_list(value: Any, name: str, where: str) -> list[tuple[str, int | None]]:
    """(input_text, turn_id) of each entry of an official-layout list of turn objects."""
    if value is None:
        raise InvalidArgument(f"{where}: no {name!r}, expected a list of {{'input_text': ...}} objects")
    entries = _require_list(value, repr(name), where)
    result = []
    for position, entry in enumerate(entries):
        item = f"{name}[{position}]"
        entry = _require_dict(entry, item, where)
        text = _require_str(entry.get("input_text"), f"{item}['input_text']", where)
        turn_id = entry.get("turn_id")
        if turn_id is not None and (isinstance(turn_id, bool) or not isinstance(turn_id, int)):
            raise InvalidArgument(f"{where}: {item}['turn_id']={_short(turn_id)}, expected an integer")
        result.append((text, turn_id))
    return result


def _check_turn_ids(
    questions: list[tuple[str, int | None]], answers: list[tuple[str, int | None]], name: str, where: str
) -> None:
    for position, ((_, question_id), (_, answer_id)) in enumerate(zip(questions, answers, strict=True)):
        if question_id is not None and answer_id is not None and question_id != answer_id:
            raise InvalidArgument(
                f"{where}: {name}[{position}] has turn_id {answer_id} but questions[{position}] has turn_id "
                f"{question_id}, expected them in the same order"
            )


def _load_jsonl(file: Path, text: str) -> list[CoqaStory]:
    stories = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}: line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"{where}, column {error.colno}: invalid JSON: {error.msg}") from error
        stories.append(_jsonl_story(record, where, default_id=f"line-{line_number}"))
    return stories


def _jsonl_story(record: Any, where: str, default_id: str) -> CoqaStory:
    record = _require_dict(record, "the line", where)
    story_id = _require_str(record.get("id", default_id), "'id'", where)
    if "id" in record:
        where += f" (id={story_id!r})"
    story_text = _require_text(record.get("story"), "'story'", where)
    source = _require_str(record.get("source", ""), "'source'", where)
    questions_field = record.get("questions")
    if isinstance(questions_field, list):  # stanfordnlp/coqa: a plain list of question strings
        questions = [_require_str(q, f"questions[{i}]", where) for i, q in enumerate(questions_field)]
    else:
        questions = _column(questions_field, "questions", where)
    if not questions:
        raise InvalidArgument(f"{where}: 'questions' is empty, expected at least one question")
    answers = _column(record.get("answers"), "answers", where)
    _check_counts(len(questions), len(answers), "'answers'", where)
    alternatives = []
    extra = _require_dict(record.get("additional_answers", {}), "'additional_answers'", where)
    for key, annotator in extra.items():
        name = f"additional_answers[{key!r}]"
        if _is_placeholder(annotator):
            continue
        texts = _column(annotator, name, where)
        _check_counts(len(questions), len(texts), repr(name), where)
        alternatives.append(texts)
    turns = tuple(
        CoqaTurn(question=question, answers=_unique_answers([answers[i]] + [alt[i] for alt in alternatives]))
        for i, question in enumerate(questions)
    )
    return CoqaStory(id=story_id, story=story_text, turns=turns, source=source)


def _column(value: Any, name: str, where: str) -> list[str]:
    """The ``input_text`` list of an lm-eval column such as ``{"input_text": [...], "turn_id": [...]}``."""
    if value is None:
        raise InvalidArgument(f"{where}: no {name!r}, expected {{'input_text': [...], ...}}")
    column = _require_dict(value, repr(name), where)
    if "input_text" not in column:
        raise InvalidArgument(f"{where}: {name!r} has no 'input_text', expected {{'input_text': [...], ...}}")
    texts = _require_list(column["input_text"], f"{name}['input_text']", where)
    return [_require_str(text, f"{name}['input_text'][{i}]", where) for i, text in enumerate(texts)]


def _is_placeholder(annotator: Any) -> bool:
    """The ``EleutherAI/coqa`` train split fills missing additional answers with one entry of turn_id -1."""
    if not isinstance(annotator, dict):
        return False
    turn_ids = annotator.get("turn_id")
    return isinstance(turn_ids, list) and bool(turn_ids) and all(turn_id == -1 for turn_id in turn_ids)


def _unique_answers(candidates: list[str]) -> tuple[str, ...]:
    """Keep the first answer and each later one not already present ignoring case (lm-eval's rule)."""
    kept: list[str] = []
    for candidate in candidates:
        if not kept or candidate.lower() not in (answer.lower() for answer in kept):
            kept.append(candidate)
    return tuple(kept)


def _check_counts(questions: int, answers: int, name: str, where: str) -> None:
    if questions != answers:
        raise InvalidArgument(
            f"{where}: {name} has {answers} turns but 'questions' has {questions}, expected one answer per question"
        )


# --- small validators: one line each, naming the field and what was found ------------------------------------


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _require_dict(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: {name} is {_kind(value)} ({_short(value)}), expected an object")
    return value


def _require_list(value: Any, name: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{where}: {name} is {_kind(value)} ({_short(value)}), expected a list")
    return value


def _require_str(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: {name}={_short(value)}, expected a string")
    return value


def _require_text(value: Any, name: str, where: str) -> str:
    text = _require_str(value, name, where)
    if not text.strip():
        raise InvalidArgument(f"{where}: {name} is empty, expected the passage text")
    return text
