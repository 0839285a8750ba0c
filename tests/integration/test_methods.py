"""On the real embedded model: methods."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModelForCausalLM

from playground.generate import generate_texts_mixed
from playground.methods import (
    MethodSettings,
    answer,
    create_method,
)
from tests.unit.test_methods import INSTRUCTION, _batch


@pytest.mark.real_model
def test_prompt_tuning_and_lora_on_the_real_model_equal_peft(real):
    """SmolLM2 (GQA, chat template): our prompt-tuning loss is PEFT's; a LoRA copy leaves the shared model alone."""
    m = create_method(real, MethodSettings("prompt", num_virtual_tokens=12), INSTRUCTION)
    peft_model = PeftModelForCausalLM(real.model, m.config)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(m.encoder.embedding.weight)
        ids, mask, labels = _batch(real)
        assert torch.allclose(m.loss(real, ids, mask, labels), peft_model(input_ids=ids, attention_mask=mask,
                                                                            labels=labels).loss, atol=1e-4)
    lora = create_method(real, MethodSettings("lora"), seed=0)
    assert lora.trainable_parameters == 30 * (4 * (576 + 576) + 4 * (576 + 192))  # r=4 on q_proj and v_proj
    fingerprint = real.fingerprint
    texts = ["A tender, funny film.", "Dull from start to finish."]
    # B = 0 at init: the LoRA copy answers exactly like the shared model
    assert answer(real, lora, texts, max_new_tokens=6) == generate_texts_mixed(real, texts, [None, None], 6, ["prefix"] * 2)
    from playground.models import weights_fingerprint

    assert weights_fingerprint(real.model) == fingerprint
