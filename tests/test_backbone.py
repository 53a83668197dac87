"""Backbone loading, semantic-ID vocabulary extension and LoRA wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gream_lit.data.catalog import DataError
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.modeling.backbone import load_backbone, load_tokenizer
from gream_lit.modeling.lora import LoraOptions, apply_lora
from gream_lit.modeling.tiny import save_tiny_backbone, tiny_causal_lm, tiny_chat_tokenizer
from gream_lit.modeling.vocab import add_index_tokens, code_means, extend_model_vocab, require_index_tokens


def small_index(style: str = "gream") -> SemanticIndex:
    # 4 items, 2 levels of 3 codes; item 3 has a shorter (1-token) ID
    return SemanticIndex(np.array([[0, 1], [0, 2], [2, 0], [1, -1]]), [3, 3], style=style)


@pytest.mark.parametrize("style", ["gream", "lcrec"])
def test_tokenizer_never_splits_id_tokens(style):
    tok = tiny_chat_tokenizer()
    index = small_index(style)
    ids = add_index_tokens(tok, index)
    assert len(set(ids)) == len(index.all_tokens()) == 6
    for item in range(index.n_items):
        text = f"history: {index.item_string(item)}, {index.item_string(0)}."
        enc = tok(text, add_special_tokens=False)["input_ids"]
        for token in index.item_tokens(item):
            assert tok.convert_tokens_to_ids(token) in enc
        assert tok.decode(enc) == text
        assert tok(index.item_string(item), add_special_tokens=False)["input_ids"] == tok.convert_tokens_to_ids(
            index.item_tokens(item)
        )


def test_missing_index_tokens_raise_clear_error():
    tok = tiny_chat_tokenizer()
    with pytest.raises(DataError, match=r"lacks 6 of the index's 6 ID tokens .*'<\|a_1\|>'"):
        require_index_tokens(tok, small_index())


def test_code_means_hand_computed():
    vectors = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 8.0]])
    means, used = code_means(vectors, small_index())
    # level a: code0 <- items 0,1; code1 <- item 3; code2 <- item 2. level b: code0 <- 2, code1 <- 0, code2 <- 1
    expected = torch.tensor([[2.0, 1.0], [7.0, 8.0], [5.0, 4.0], [5.0, 4.0], [1.0, 0.0], [3.0, 2.0]])
    assert torch.allclose(means, expected)
    assert used.all()


def test_extend_vocab_text_mean_sets_new_rows_only():
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok))
    old = model.get_input_embeddings().weight.detach().clone()
    index = small_index()
    add_index_tokens(tok, index)
    texts = ["ab", "b", "cd", "a"]
    ids = extend_model_vocab(model, tok, index, "text_mean", texts)
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape[0] == len(tok) and torch.equal(emb[: old.shape[0]], old)
    row = lambda s: old[tok(s, add_special_tokens=False)["input_ids"]].mean(0)  # noqa: E731
    # <|a_1|> (code 0 at level a) is carried by items 0 ("ab") and 1 ("b")
    assert torch.allclose(emb[ids[0]], (row("ab") + row("b")) / 2, atol=1e-6)
    assert torch.allclose(model.get_output_embeddings().weight[ids[0]], emb[ids[0]])  # tied
    assert extend_model_vocab(model, tok, index) == ids  # already extended: unchanged


def test_load_backbone_local_folder(tmp_path):
    path = save_tiny_backbone(tmp_path / "tiny")
    model, tok = load_backbone(path)
    assert tok.chat_template and tok.pad_token_id is not None
    assert model.get_input_embeddings().weight.shape[0] == len(tok)


def test_load_tokenizer_without_chat_template_fails(tmp_path):
    tok = tiny_chat_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no chat template"):
        load_tokenizer(str(tmp_path))


def test_lora_trains_only_adapters_and_id_rows():
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok))
    index = small_index()
    add_index_tokens(tok, index)
    ids = extend_model_vocab(model, tok, index)
    peft_model = apply_lora(model, LoraOptions(r=2, alpha=4, target_modules=["q_proj", "v_proj"]), ids)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    head = peft_model.get_output_embeddings()
    before = head(torch.ones(1, 64)).detach()
    x = torch.tensor([[1, 2, ids[0]]])
    peft_model(input_ids=x, labels=torch.tensor([[1, ids[0], ids[3]]])).loss.backward()
    torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0).step()
    change = (head(torch.ones(1, 64)).detach() - before).abs()[0]
    assert change[: min(ids)].max() == 0  # old vocabulary rows (tied output) untouched
    assert change[ids].max() > 0  # ID rows learn, in the tied output projection too


@pytest.mark.slow
def test_real_smollm2_gguf_loads_with_chat_template():
    pytest.importorskip("gguf")
    model, tok = load_backbone("smollm2-135m-instruct")
    assert "quantization_config" not in model.config.to_dict()
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    index = small_index()
    add_index_tokens(tok, index)
    ids = extend_model_vocab(model, tok, index)
    assert tok(index.item_string(0), add_special_tokens=False)["input_ids"] == ids[:1] + ids[4:5]
    chat = [{"role": "user", "content": "What is 2+2?"}]
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    assert "4" in tok.decode(out[0, enc["input_ids"].shape[1] :])


@pytest.mark.slow
def test_gguf_conversion_leaves_the_seeded_random_stream_alone(tmp_path, monkeypatch):
    """The first run on a fresh machine converts the GGUF (a randomly initialised model, then the real
    weights); a later run finds the folder. Both must train from the same random numbers."""
    pytest.importorskip("gguf")
    from gream_lit.modeling.backbone import resolve

    monkeypatch.setenv("GREAM_LIT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert resolve("smollm2-135m-instruct").startswith(str(tmp_path))
    assert torch.equal(torch.get_rng_state(), state)


def _perturbed_adapter(model, token_ids: list[int], seed: int):
    """LoRA with non-zero updates and changed ID-token rows, as after training."""
    peft_model = apply_lora(model, LoraOptions(r=2, alpha=4, dropout=0.0), token_ids)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return peft_model.eval()


def test_chained_adapter_handoffs_load_back_merged(tmp_path):
    """align -> next stage as adapters only: each folder loads back to the model that was saved."""
    from gream_lit.modeling.backbone import load_causal_lm

    base_dir = save_tiny_backbone(tmp_path / "base", hidden_size=32)
    model, tokenizer = load_backbone(base_dir)
    index = small_index()
    add_index_tokens(tokenizer, index)
    token_ids = extend_model_vocab(model, tokenizer, index)
    first = _perturbed_adapter(model, token_ids, seed=1)
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(index.all_tokens())[:6]])
    with torch.no_grad():
        expected_first = first(input_ids=ids).logits
    first.save_pretrained(tmp_path / "align", save_embedding_layers=False)
    tokenizer.save_pretrained(tmp_path / "align")

    merged = load_causal_lm(str(tmp_path / "align")).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected_first, rtol=1e-4, atol=1e-5)
    assert merged.name_or_path == str(tmp_path / "align")
    assert all(p.requires_grad for p in merged.parameters())  # trainable like any from_pretrained model

    second = _perturbed_adapter(merged, token_ids, seed=2)
    with torch.no_grad():
        expected_second = second(input_ids=ids).logits
    assert not torch.allclose(expected_second, expected_first)
    second.save_pretrained(tmp_path / "curriculum", save_embedding_layers=False)
    tokenizer.save_pretrained(tmp_path / "curriculum")
    chained = load_causal_lm(str(tmp_path / "curriculum")).eval()
    with torch.no_grad():
        torch.testing.assert_close(chained(input_ids=ids).logits, expected_second, rtol=1e-4, atol=1e-5)


def test_adapter_without_a_base_is_a_clear_error(tmp_path):
    from gream_lit.modeling.backbone import load_causal_lm

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="base_model_name_or_path"):
        load_causal_lm(str(tmp_path))


def test_first_layers_cut_is_the_shallow_model_and_cached(tmp_path, monkeypatch):
    """``folder[:k]`` loads the base with only its first k decoder layers, from a folder made once."""
    from gream_lit.modeling import backbone
    from gream_lit.modeling.backbone import load_causal_lm, resolve

    monkeypatch.setenv("GREAM_LIT_CACHE", str(tmp_path / "cache"))
    base = save_tiny_backbone(tmp_path / "base", hidden_size=32, num_layers=3)
    full = load_causal_lm(base).eval()
    del full.model.layers[2:]

    def drawing_load(path, *args):  # a load that draws random numbers, as a from_config init does
        torch.rand(3)
        return load_causal_lm(path, *args)

    with monkeypatch.context() as patch:
        patch.setattr(backbone, "load_causal_lm", drawing_load)
        state = torch.get_rng_state()
        assert resolve(f"{base}[:2]")
        assert torch.equal(torch.get_rng_state(), state)  # a first run draws what a cached run draws
    cut, tokenizer = load_backbone(f"{base}[:2]")
    assert len(cut.model.layers) == cut.config.num_hidden_layers == 2
    ids = torch.tensor([tokenizer("the next item", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(cut.eval()(input_ids=ids).logits, full(input_ids=ids).logits)
    folder = resolve(f"{base}[:2]")
    assert folder.startswith(str(tmp_path / "cache" / "models" / "first-layers"))
    written = (tmp_path / "cache").rglob("*.safetensors")
    assert len(list(written)) == 1  # the second resolve reused the folder


@pytest.mark.parametrize("layers", [0, 4])
def test_first_layers_out_of_range_is_a_clear_error(tmp_path, monkeypatch, layers):
    from gream_lit.modeling.backbone import resolve

    monkeypatch.setenv("GREAM_LIT_CACHE", str(tmp_path / "cache"))
    base = save_tiny_backbone(tmp_path / "base", hidden_size=32, num_layers=3)
    with pytest.raises(ValueError, match=rf"\[:{layers}\]: the model has 3 decoder layers; keep 1 to 3"):
        resolve(f"{base}[:{layers}]")


def test_first_layers_of_an_adapter_folder_is_refused(tmp_path):
    from gream_lit.modeling.backbone import resolve

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="cut a base model, not an adapter folder"):
        resolve(f"{tmp_path}[:1]")
