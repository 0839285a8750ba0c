"""Label scoring: of a classification task's few labels, pick the one the model finds likeliest.

Generation has to produce the label exactly, in the expected form; label scoring only asks which
label the model leans to. The gap between the two is how much of a score is *format* (saying
"positive" and stopping) rather than *knowledge* (knowing the review is positive).

A label's score is the summed log-probability of its tokens after the prompt, as the usual
multiple-choice evaluations score a continuation (lm-evaluation-harness's loglikelihood): the
end-of-answer token is not counted. So where greedy generation produces a one-token label, label
scoring picks that same label: it is the likeliest token of all, hence of the labels (tested).
"""

from __future__ import annotations

import torch

from .generate import mixed_prefix_cache
from .models import BaseModel
from .prompts import pad_left

ROWS_PER_FORWARD = 16  # (query, label) rows scored in one forward pass


@torch.inference_mode()
def label_logprobs(base: BaseModel, prompts: list[list[int]], labels: list[list[int]], cache=None) -> torch.Tensor:
    """[queries, labels]: log p(label tokens | prompt), every prompt behind ``cache`` (a prefix-like
    key/value cache, or None). Rows are (prompt + label), left-padded, so each label ends the row."""
    rows = [(q, j) for q in range(len(prompts)) for j in range(len(labels))]
    out = torch.empty(len(prompts), len(labels))
    K = max(len(lab) for lab in labels)
    for s in range(0, len(rows), ROWS_PER_FORWARD):
        chunk = rows[s:s + ROWS_PER_FORWARD]
        ids, mask = pad_left([prompts[q] + labels[j] for q, j in chunk], base.tokenizer.pad_token_id)  # [R, T]
        pcache, pmask = mixed_prefix_cache(base, [cache] * len(chunk))  # pmask [R, Pmax]
        mask = torch.cat([pmask, mask.to(base.device)], dim=1)  # [R, Pmax + T]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, pmask.shape[1]:]  # [R, T]
        logits = base.model(input_ids=ids.to(base.device), attention_mask=mask, position_ids=pos,
                            past_key_values=pcache, use_cache=pcache is not None,
                            logits_to_keep=K + 1).logits.float()  # [R, K + 1, vocab]: the last K + 1 positions
        logp = logits.log_softmax(-1)
        for r, (q, j) in enumerate(chunk):
            n = len(labels[j])  # the label's n tokens are the row's last n, predicted one position earlier
            targets = torch.tensor(labels[j], device=logp.device)  # [n]
            out[q, j] = logp[r, K - n:K].gather(-1, targets[:, None]).sum()
    return out
