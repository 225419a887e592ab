"""CoQA data and scoring: the shipped set, both file layouts, malformed files, lm-eval's prompt, EM/F1."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from harness.errors import InvalidArgument
from harness.evals.coqa_data import (
    SHIPPED_FILENAME,
    CoqaStory,
    CoqaTurn,
    build_prompt,
    data_hash,
    default_coqa_path,
    iter_items,
    load_coqa,
)
from harness.evals.squad_metrics import (
    exact_match,
    f1_score,
    leave_one_out,
    max_over_golds,
    normalize_answer,
)

SHIPPED = default_coqa_path()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The shipped file as plain JSON, read without the harness's loader (the oracle for the loader)."""
    return json.loads(SHIPPED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shipped() -> list[CoqaStory]:
    return load_coqa(SHIPPED)


def _unique_ignoring_case(texts: list[str]) -> list[str]:
    kept: list[str] = []
    for text in texts:
        if text.lower() not in [k.lower() for k in kept]:
            kept.append(text)
    return kept


def _annotators(record: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [record["answers"], *record.get("additional_answers", {}).values()]


# --- the shipped set ----------------------------------------------------------------------------------------------


def test_shipped_file_is_found_in_the_suites_folder() -> None:
    assert SHIPPED.is_absolute()
    assert SHIPPED.is_file()
    assert SHIPPED.parts[-3:] == ("accuracy", "data", SHIPPED_FILENAME)


def test_shipped_set_has_enough_stories_and_conversations(raw: dict[str, Any], shipped: list[CoqaStory]) -> None:
    assert raw["version"] == "1.0"
    assert len(shipped) == len(raw["data"]) >= 40
    assert len({story.id for story in shipped}) == len(shipped)
    for story in shipped:
        assert 4 <= len(story.turns) <= 7, story.id
        assert 120 <= len(story.story.split()) <= 250, story.id
        for turn in story.turns:
            assert turn.question.strip().endswith(("?", ".")), (story.id, turn.question)
            assert turn.gold.strip(), (story.id, turn.question)
    assert sum(len(story.turns) for story in shipped) == sum(len(record["questions"]) for record in raw["data"])


def test_every_rationale_span_is_the_story_slice_it_names(raw: dict[str, Any]) -> None:
    for record in raw["data"]:
        story = record["story"]
        questions = record["questions"]
        assert [q["turn_id"] for q in questions] == list(range(1, len(questions) + 1)), record["id"]
        annotators = _annotators(record)
        assert len(annotators) == 3, record["id"]  # gold + two additional annotators
        for answers in annotators:
            assert [a["turn_id"] for a in answers] == [q["turn_id"] for q in questions], record["id"]
            for answer in answers:
                where = (record["id"], answer["turn_id"], answer["input_text"])
                assert 0 <= answer["span_start"] < answer["span_end"] <= len(story), where
                assert story[answer["span_start"] : answer["span_end"]] == answer["span_text"], where
                assert answer["input_text"].strip(), where


def test_loader_keeps_questions_gold_first_and_drops_repeated_answers(
    raw: dict[str, Any], shipped: list[CoqaStory]
) -> None:
    for record, story in zip(raw["data"], shipped, strict=True):
        assert (story.id, story.story, story.source) == (record["id"], record["story"], record["source"])
        assert [turn.question for turn in story.turns] == [q["input_text"] for q in record["questions"]]
        for index, turn in enumerate(story.turns):
            texts = [answers[index]["input_text"] for answers in _annotators(record)]
            assert turn.gold == texts[0]
            assert list(turn.answers) == _unique_ignoring_case(texts)


# --- both layouts -------------------------------------------------------------------------------------------------


def _column(entries: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A list of turn objects as the column of lists that HF `datasets` writes for a Sequence feature."""
    return {key: [entry[key] for entry in entries] for key in entries[0]}


def _eleuther_record(record: dict[str, Any]) -> dict[str, Any]:
    """One official-layout story as a row of the `EleutherAI/coqa` dataset (what lm-eval's task reads)."""
    return {
        "id": record["id"],
        "source": record["source"],
        "story": record["story"],
        "questions": _column(record["questions"]),
        "answers": _column(record["answers"]),
        "additional_answers": {key: _column(value) for key, value in record["additional_answers"].items()},
    }


def _stanford_record(record: dict[str, Any]) -> dict[str, Any]:
    """The `stanfordnlp/coqa` variant: plain question strings, answer offsets, no id, no additional answers."""
    return {
        "source": record["source"],
        "story": record["story"],
        "questions": [q["input_text"] for q in record["questions"]],
        "answers": {
            "input_text": [a["input_text"] for a in record["answers"]],
            "answer_start": [a["span_start"] for a in record["answers"]],
            "answer_end": [a["span_end"] for a in record["answers"]],
        },
    }


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_lm_eval_jsonl_layout_loads_the_same_stories(
    tmp_path: Path, raw: dict[str, Any], shipped: list[CoqaStory]
) -> None:
    path = _write_jsonl(tmp_path / "coqa_validation.jsonl", [_eleuther_record(r) for r in raw["data"]])
    assert load_coqa(path) == shipped
    assert data_hash(load_coqa(path)) == data_hash(shipped)


def test_jsonl_is_detected_by_content_not_by_suffix(tmp_path: Path, raw: dict[str, Any]) -> None:
    # `datasets.Dataset.to_json` writes jsonl under a .json name.
    path = _write_jsonl(tmp_path / "export.json", [_eleuther_record(r) for r in raw["data"][:3]])
    assert [story.id for story in load_coqa(path)] == [r["id"] for r in raw["data"][:3]]


def test_stanford_variant_reads_with_line_ids_and_gold_only(tmp_path: Path, raw: dict[str, Any]) -> None:
    records = raw["data"][:4]
    lines = [json.dumps(_stanford_record(r)) for r in records]
    path = tmp_path / "stanford.jsonl"
    path.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n", encoding="utf-8")  # a blank line is skipped
    stories = load_coqa(path)
    assert [story.id for story in stories] == ["line-1", "line-3", "line-4", "line-5"]
    for record, story in zip(records, stories, strict=True):
        assert [turn.answers for turn in story.turns] == [(a["input_text"],) for a in record["answers"]]


def test_train_split_placeholder_additional_answers_are_ignored(tmp_path: Path, raw: dict[str, Any]) -> None:
    record = _eleuther_record(raw["data"][0])
    placeholder = {"span_start": [-1], "span_end": [-1], "span_text": [""], "input_text": [""], "turn_id": [-1]}
    record["additional_answers"] = {"0": placeholder, "1": placeholder, "2": placeholder}
    (story,) = load_coqa(_write_jsonl(tmp_path / "train.jsonl", [record]))
    assert [turn.answers for turn in story.turns] == [(a["input_text"],) for a in raw["data"][0]["answers"]]


def test_one_line_official_file_is_not_mistaken_for_jsonl(
    tmp_path: Path, raw: dict[str, Any], shipped: list[CoqaStory]
) -> None:
    path = tmp_path / "minified.json"
    path.write_text(json.dumps(raw, separators=(",", ":")), encoding="utf-8")
    assert load_coqa(path) == shipped


def test_answers_differing_only_in_case_count_once(tmp_path: Path, raw: dict[str, Any]) -> None:
    document = {"version": "1.0", "data": [copy.deepcopy(raw["data"][0])]}
    record = document["data"][0]
    gold = record["answers"][0]["input_text"]
    record["additional_answers"]["0"][0]["input_text"] = gold.upper()
    record["additional_answers"]["1"][0]["input_text"] = "something else"
    path = tmp_path / "case.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    (story,) = load_coqa(path)
    assert story.turns[0].answers == (gold, "something else")


# --- malformed files ------------------------------------------------------------------------------------------------


def _official(raw: dict[str, Any], edit: Any) -> str:
    document = {"version": "1.0", "data": copy.deepcopy(raw["data"][:2])}
    edit(document["data"])
    return json.dumps(document, indent=1)


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def edit(data: Any) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _delete(path: tuple[Any, ...]) -> Any:
    def edit(data: Any) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


MALFORMED_OFFICIAL = {
    "no questions": (_set((1, "questions"), []), "'questions' is empty"),
    "questions missing": (_delete((0, "questions")), "no 'questions'"),
    "fewer answers than questions": (lambda d: d[0]["answers"].pop(), "'answers' has 6 turns but 'questions' has 7"),
    "annotator short of a turn": (lambda d: d[1]["additional_answers"]["1"].pop(), "'additional_answers'['1'] has"),
    "question is a number": (_set((0, "questions", 2, "input_text"), 42), "questions[2]['input_text']=42"),
    "answer text missing": (_delete((0, "answers", 0, "input_text")), "answers[0]['input_text']=None"),
    "story is a list": (_set((0, "story"), ["text"]), "'story'=['text'], expected a string"),
    "blank story": (_set((0, "story"), "   "), "'story' is empty"),
    "id missing": (_delete((1, "id")), "'id'=None, expected a string"),
    "turn ids out of step": (_set((0, "answers", 3, "turn_id"), 5), "answers[3] has turn_id 5 but questions[3]"),
    "turn id is text": (_set((0, "questions", 1, "turn_id"), "2"), "questions[1]['turn_id']='2', expected an integer"),
    "record is a string": (_set((1,), "story"), "the story record is a string"),
    "duplicate ids": (_set((1, "id"), "children-01"), "story id 'children-01' appears twice"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_OFFICIAL))
def test_malformed_official_file_names_file_and_problem(tmp_path: Path, raw: dict[str, Any], case: str) -> None:
    edit, expected = MALFORMED_OFFICIAL[case]
    path = tmp_path / "broken coqa.json"
    path.write_text(_official(raw, edit), encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        load_coqa(path)
    message = str(caught.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert "\n" not in message


MALFORMED_TEXT = {
    "empty file": ("", "the file is empty"),
    "truncated JSON": ('{"version": "1.0",\n  "data": [\n    {"id": "x",', "invalid JSON at line 3, column 16"),
    "top level is a list": ("[1, 2]", "top level is a list without 'data'"),
    "data is an object": ('{"data": {"id": "x"}}', "'data' is an object, expected a list"),
    "no stories": ('{"version": "1.0", "data": []}', "no stories in the file"),
    "jsonl with a broken second line": (
        '{"story": "S", "questions": {"input_text": ["Q?"]}, "answers": {"input_text": ["A"]}}\n{"story": ',
        "line 2, column 11: invalid JSON",
    ),
    "jsonl without answers": ('{"story": "S", "questions": {"input_text": ["Q?"]}}\n', "line 1: no 'answers'"),
    "jsonl answers without input_text": (
        '{"story": "S", "questions": {"input_text": ["Q?"]}, "answers": {"span_text": ["A"]}}\n',
        "'answers' has no 'input_text'",
    ),
    "jsonl counts differ": (
        '{"id": "k", "story": "S", "questions": {"input_text": ["Q?", "R?"]}, "answers": {"input_text": ["A"]}}\n',
        "line 1 (id='k'): 'answers' has 1 turns but 'questions' has 2",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_TEXT))
def test_malformed_text_names_file_and_problem(tmp_path: Path, case: str) -> None:
    content, expected = MALFORMED_TEXT[case]
    path = tmp_path / "data.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        load_coqa(path)
    message = str(caught.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert "\n" not in message


def test_missing_directory_and_binary_files_are_reported(tmp_path: Path) -> None:
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b'{"story": "\xff\xfe"}')
    cases = {tmp_path / "absent.json": "no such file", tmp_path: "not a regular file", binary: "not UTF-8 text"}
    for path, expected in cases.items():
        with pytest.raises(InvalidArgument, match=expected) as caught:
            load_coqa(str(path))
        assert str(caught.value).startswith(str(path) + ": ")


# --- prompts --------------------------------------------------------------------------------------------------------

TINY = CoqaStory(
    id="tiny",
    story="Ana has a red kite.\n\nShe flies it on Sundays.",
    turns=(
        CoqaTurn("What does Ana have?", ("a red kite", "a kite")),
        CoqaTurn("When does she fly it?", ("on Sundays",)),
        CoqaTurn("What colour is it?", ("red",)),
    ),
)


def test_prompt_matches_a_hand_checked_lm_eval_prompt() -> None:
    # Written out by hand from lm-eval 0.4.13 tasks/coqa/utils.py doc_to_text: story + "\n\n", then
    # "Q: {q}\n\n" + "A: {a}\n\n" for answered turns, and "Q: {q}\n\n" + "A:" for the asked one.
    expected = (
        "Ana has a red kite.\n\nShe flies it on Sundays.\n\n"
        "Q: What does Ana have?\n\nA: a red kite\n\n"
        "Q: When does she fly it?\n\nA: on Sundays\n\n"
        "Q: What colour is it?\n\nA:"
    )
    assert build_prompt(TINY, 2) == expected
    assert build_prompt(TINY, 0) == "Ana has a red kite.\n\nShe flies it on Sundays.\n\nQ: What does Ana have?\n\nA:"


@pytest.mark.parametrize("turn_index", [-1, 3])
def test_prompt_rejects_a_turn_the_story_lacks(turn_index: int) -> None:
    with pytest.raises(InvalidArgument, match="turn_index"):
        build_prompt(TINY, turn_index)


def _lm_eval_coqa_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """lm-eval's own tasks/coqa/utils.py, loaded from the installed lm-eval with its transformers import stubbed.

    It does `import transformers.data.metrics.squad_metrics`, gone in transformers 5; the stub hands it this
    harness's EM/F1 so that its prompt, target and score aggregation code runs unchanged."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lm-eval is not installed (pip install 'fourbit-harness[eval]'): cross-check not run")
    source = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "coqa" / "utils.py"
    if not source.is_file():
        pytest.skip(f"{source} not found in this lm-eval version")
    squad = types.ModuleType("transformers.data.metrics.squad_metrics")
    squad.compute_exact = lambda a_gold, a_pred: exact_match(a_pred, a_gold)  # type: ignore[attr-defined]
    squad.compute_f1 = lambda a_gold, a_pred: f1_score(a_pred, a_gold)  # type: ignore[attr-defined]
    parent: types.ModuleType | None = None
    for name in ("transformers", "transformers.data", "transformers.data.metrics"):
        module = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, module)
        if parent is not None:
            setattr(parent, name.rsplit(".", 1)[1], module)
        parent = module
    assert parent is not None
    parent.squad_metrics = squad  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, squad.__name__, squad)
    module_spec = importlib.util.spec_from_file_location("lm_eval_coqa_utils_under_test", source)
    assert module_spec is not None and module_spec.loader is not None
    utils = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(utils)
    return utils


def _truncated(record: dict[str, Any], turns: int) -> dict[str, Any]:
    """An EleutherAI/coqa row cut to its first `turns` turns: lm-eval then asks the last of them."""

    def cut(column: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {key: values[:turns] for key, values in column.items()}

    return {
        **record,
        "questions": cut(record["questions"]),
        "answers": cut(record["answers"]),
        "additional_answers": {key: cut(value) for key, value in record["additional_answers"].items()},
    }


def test_prompts_targets_and_scores_match_lm_eval_itself(
    monkeypatch: pytest.MonkeyPatch, raw: dict[str, Any], shipped: list[CoqaStory]
) -> None:
    utils = _lm_eval_coqa_utils(monkeypatch)
    for record, story in zip(raw["data"], shipped, strict=True):
        doc = _eleuther_record(record)
        for turns in range(1, len(story.turns) + 1):
            truncated = _truncated(doc, turns)
            turn = story.turns[turns - 1]
            assert build_prompt(story, turns - 1) == utils.doc_to_text(truncated)
            assert list(turn.answers) == utils.doc_to_target(truncated)
            for prediction in (turn.gold, turn.answers[-1], story.turns[0].gold, "no idea", ""):
                lm_eval_scores = utils.compute_scores(list(turn.answers), prediction)
                assert lm_eval_scores["em"] == pytest.approx(leave_one_out(exact_match, prediction, turn.answers))
                assert lm_eval_scores["f1"] == pytest.approx(leave_one_out(f1_score, prediction, turn.answers))


def test_items_cover_every_turn_or_only_the_last(shipped: list[CoqaStory]) -> None:
    every = list(iter_items(shipped))
    assert len(every) == sum(len(story.turns) for story in shipped)
    assert every[: len(shipped[0].turns)] == [(shipped[0], i) for i in range(len(shipped[0].turns))]
    assert list(iter_items(shipped, all_turns=False)) == [(story, len(story.turns) - 1) for story in shipped]


# --- data hash ------------------------------------------------------------------------------------------------------


def test_data_hash_is_sha256_of_the_documented_canonical_json() -> None:
    canonical = (
        '[{"id":"tiny","story":"Ana has a red kite.\\n\\nShe flies it on Sundays.","turns":['
        '{"answers":["a red kite","a kite"],"question":"What does Ana have?"},'
        '{"answers":["on Sundays"],"question":"When does she fly it?"},'
        '{"answers":["red"],"question":"What colour is it?"}]}]'
    )
    assert data_hash([TINY]) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_data_hash_is_stable_and_sees_one_changed_character(shipped: list[CoqaStory]) -> None:
    reference = data_hash(shipped)
    assert reference == data_hash(load_coqa(SHIPPED))
    first = shipped[0]
    story_edit = dataclasses.replace(first, story=first.story.replace("Pim", "Pam", 1))
    turn = first.turns[0]
    answer_edit = dataclasses.replace(
        first, turns=(dataclasses.replace(turn, answers=(turn.gold + "s", *turn.answers[1:])), *first.turns[1:])
    )
    question_edit = dataclasses.replace(
        first, turns=(dataclasses.replace(turn, question=turn.question[:-1] + "."), *first.turns[1:])
    )
    whitespace_edit = dataclasses.replace(first, story=first.story + " ")
    id_edit = dataclasses.replace(first, id=first.id + "x")
    for edited in (story_edit, whitespace_edit, answer_edit, question_edit, id_edit):
        assert edited != first
        assert data_hash([edited, *shipped[1:]]) != reference
    assert data_hash([shipped[1], shipped[0], *shipped[2:]]) != reference
    assert data_hash([dataclasses.replace(first, source="other"), *shipped[1:]]) == reference


# --- EM / F1 --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Cat's  hat!", "cats hat"),
        ("An apple, a pear and the plum.", "apple pear and plum"),
        ("theory of anything", "theory of anything"),  # articles only as whole words
        ("a-b", "ab"),  # punctuation goes first, so "a" is no longer a word of its own
        ("  Two\tthousand\nand five ", "two thousand and five"),
        ("The.", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("an owl", "the owl!") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("twelve", "12") == 0.0  # no number normalisation, as in SQuAD and CoQA


def test_f1_gives_partial_credit_by_token_overlap() -> None:
    # "in the old oak tree" -> [in, old, oak, tree]; "oak tree" -> [oak, tree]; 2 shared.
    precision, recall = 2 / 4, 2 / 2
    assert f1_score("in the old oak tree", "oak tree") == pytest.approx(2 * precision * recall / (precision + recall))
    assert f1_score("oak tree", "in the old oak tree") == pytest.approx(2 * precision * recall / (precision + recall))
    # Repeated words count as often as both sides have them: "red red ball" vs "red red kite" shares
    # "red" twice (a set of words would share it once), so 2 of 3 predicted and 2 of 3 gold tokens.
    precision, recall = 2 / 3, 2 / 3
    assert f1_score("red red ball", "red red kite") == pytest.approx(2 * precision * recall / (precision + recall))
    # ... and no more often than the side with fewer: "red" once in the gold, so 2 shared of 3 predicted.
    precision, recall = 2 / 3, 2 / 2
    assert f1_score("red red ball", "red ball") == pytest.approx(2 * precision * recall / (precision + recall))
    assert f1_score("The Eiffel Tower.", "eiffel tower") == 1.0
    assert f1_score("a blue fish", "red kite") == 0.0


def test_empty_answers_follow_the_coqa_rule() -> None:
    assert f1_score("", "") == 1.0
    assert f1_score("The.", "") == 1.0  # empty after normalisation counts as empty
    assert f1_score("", "yes") == 0.0
    assert f1_score("yes", "") == 0.0
    assert exact_match("", "") == 1.0
    assert exact_match("", "no") == 0.0


def test_several_golds_max_versus_leave_one_out() -> None:
    golds = ["Paris", "paris city", "France"]
    # F1 of "Paris" against each: 1, 2/3 (P=1/1, R=1/2), 0. Max: 1.
    # Leave one out: without gold 0 -> 2/3, without gold 1 -> 1, without gold 2 -> 1; mean (2/3 + 1 + 1) / 3.
    assert max_over_golds(f1_score, "Paris", golds) == 1.0
    assert leave_one_out(f1_score, "Paris", golds) == pytest.approx((2 / 3 + 1 + 1) / 3)
    # EM: matches only gold 0, so only the two leave-outs that keep it score: 2/3.
    assert leave_one_out(exact_match, "Paris", golds) == pytest.approx(2 / 3)
    assert leave_one_out(f1_score, "oak tree", ["an oak tree"]) == f1_score("oak tree", "an oak tree") == 1.0


@pytest.mark.parametrize("combine", [max_over_golds, leave_one_out])
def test_gold_lists_must_be_non_empty_sequences(combine: Any) -> None:
    with pytest.raises(InvalidArgument, match="at least one gold"):
        combine(f1_score, "x", [])
    with pytest.raises(InvalidArgument, match="not one string"):
        combine(f1_score, "x", "Paris")


def test_leave_one_out_never_exceeds_max_on_the_shipped_answers(shipped: list[CoqaStory]) -> None:
    for story in shipped:
        for turn in story.turns:
            for prediction in (turn.gold, turn.answers[-1], "yes"):
                for metric in (exact_match, f1_score):
                    assert leave_one_out(metric, prediction, turn.answers) <= max_over_golds(
                        metric, prediction, turn.answers
                    )
