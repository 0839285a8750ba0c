"""The tuning methods the Compare lab puts side by side on one frozen model, and their registry.

Each method is one small object with the same five things: its trainable parameters, a
training loss over target tokens (the LM head applied only at target positions, as in
``losses.target_loss``), greedy answers, the prompt ``mode`` it answers in, and its sizes
(trainable, stored at export, and the key/value positions it adds to every layer at inference):

- ``prefix`` / ``prefix_mlp``: prefix tuning, directly or through PEFT's MLP (``Prefix``);
- ``prompt``: prompt tuning, PEFT's ``PromptEmbedding``: P trainable vectors in front of the
  input *embeddings*, so only the first layer sees them directly;
- ``lora``: PEFT's ``LoraConfig`` injected into a *module copy* of the shared model whose
  weight tensors are the shared model's own (no memory copied), so the model other sessions
  use is never changed;
- ``instruction``: the base model with the task instruction as its system prompt (no training);
  ``BareMethod`` is the base model on the input alone;
- ``instruction_format``: the instruction plus one sentence on the output's form (per task, chosen
  on validation): the cheapest fix for a chat model's chatty answers;
- ``few_shot`` / ``few_shot_cached``: the instruction and k training examples before the query
  (``fewshot.py``), as text on every query or as their key/values computed once: the strongest
  simple baseline, and an untrained "prefix" of as many positions as the demonstrations' tokens;
- ``label_scoring``: the cached few-shot prompt, answering with the likeliest of a classification
  task's labels instead of generating (``labelscore.py``): knowledge without the format.

As in ``prefix.py``, nothing global is switched: each object carries what it adds, so two
sessions can use different methods on one model at once. Tests check each against plain PEFT.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass, replace

import torch
from peft import LoraConfig, PeftModelForCausalLM, PromptTuningConfig, get_peft_model, get_peft_model_state_dict

from .errors import PlaygroundError
from .fewshot import STYLES, TextCache, demonstrations, head_ids
from .generate import answer_text, decode, greedy_mixed
from .labelscore import label_logprobs
from .losses import head_loss, target_loss
from .models import BaseModel
from .prefix import DEMO_SHOTS, Prefix, PrefixSettings, create_prefix, sized
from .prompts import PromptFormat, pad_left
from .tasks import GENERIC_FORMATS, MAX_LABELS, Example, labels_of


@dataclass(frozen=True)
class MethodInfo:
    """What the app states about one method: its name, where it acts, how it starts and trains by default."""

    name: str  # display name
    where: str  # where it changes the computation (the column of the table people quote)
    learning_rate: float | None  # AdamW default for live-demo budgets (tens of steps); None: nothing to train
    text_init: bool  # can start from a text's activations (init "task" or "text")
    random_init_lr: float | None = None  # the rate from random init, where it differs from learning_rate


# Learning rates chosen on sentiment's validation split (48 reviews, 20 steps, seed 0, 2026-11-25):
# prompt 3e-2 gave 95.8% (1e-1: 89.6%, 3e-1: 87.5%); LoRA 3e-3 gave 100% (1e-3: 72.9%, 1e-2: 97.9%);
# prefix + MLP (random init) 1e-3 gave 81.2% (3e-3: 47.9%, 1e-2: 0%); the direct prefix from text 1e-2
# (94% at step 5, vs 86% at step 7 for 3e-3). The direct prefix from random init trains at PEFT's tutorial
# rate 3e-2, which docs/experiments.md's init study used; it was not chosen on validation (that doc's MLP
# study, on topic's test split, has it at 23.3% vs 36.7% at 1e-2, with wide seed spreads).
METHODS = {
    "prefix": MethodInfo("Prefix tuning", "keys/values in every layer", 1e-2, True, random_init_lr=3e-2),
    "prefix_mlp": MethodInfo("Prefix tuning + MLP", "keys/values in every layer (MLP dropped at export)", 1e-3,
                             False),  # PEFT can't invert the MLP: random init only
    "prompt": MethodInfo("Prompt tuning", "input embeddings only", 3e-2, True),
    "lora": MethodInfo("LoRA", "attention weights (q, v) in every layer", 3e-3, False),
    "instruction": MethodInfo("Instruction prompt (no training)", "nothing trained: a text prompt", None, False),
    "instruction_format": MethodInfo("Instruction + output format (no training)", "nothing trained: a text prompt "
                                     "that also says what form the answer takes", None, False),
    "few_shot": MethodInfo("Few-shot prompt (no training)", "nothing trained: k examples in every prompt", None, False),
    "few_shot_cached": MethodInfo("Few-shot, cached (no training)", "nothing trained: k examples' keys/values, "
                                  "computed once", None, False),
    "label_scoring": MethodInfo("Label scoring, few-shot (no training)", "nothing trained: the likeliest label "
                                "after k examples (classification tasks)", None, False),
}
PROMPTING_METHODS = ("instruction", "instruction_format", "few_shot", "few_shot_cached", "label_scoring")
FEW_SHOT_METHODS = ("few_shot", "few_shot_cached", "label_scoring")  # draw demonstrations from the training split
VIRTUAL_TOKEN_METHODS = ("prefix", "prefix_mlp", "prompt")  # the methods num_virtual_tokens and init apply to


def default_init(method: str) -> str:
    """How ``method`` starts unless told otherwise: from the task's instruction where it can, else random."""
    return "task" if METHODS[method].text_init else "random"


def default_learning_rate(method: str, init: str = "task") -> float | None:
    """The AdamW rate ``method`` trains at by default from ``init`` (None: the instruction prompt trains nothing)."""
    info = METHODS[method]
    if init == "random" and info.random_init_lr is not None:
        return info.random_init_lr
    return info.learning_rate


def prefix_learning_rate(prefix_projection: bool, init: str) -> float:
    """The Train tab's and CLI's default rate for a prefix: the MLP's own when ``prefix_projection``."""
    return default_learning_rate("prefix_mlp" if prefix_projection else "prefix", init)


@dataclass
class MethodSettings:
    """One method and its knobs. Field names follow PEFT's configs."""

    method: str = "prefix"  # a key of METHODS
    num_virtual_tokens: int = 20  # prefix, prefix_mlp, prompt
    init: str = "task"  # "task", "text", "demos" (prefix only) or "random" (prefix_mlp: random only, PEFT can't
    #                     invert the MLP)
    init_text: str = ""  # with init == "text"
    init_shots: int = DEMO_SHOTS  # with init == "demos": training examples the prefix starts from (drawn with the seed)
    encoder_hidden_size: int = 256  # prefix_mlp: the MLP's hidden width
    r: int = 4  # lora: rank
    lora_alpha: int = 8  # lora: scale numerator (scale = lora_alpha / r)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # lora: which Linear layers get adapters
    shots: int = 4  # few_shot, few_shot_cached: training examples before the query (drawn with the seed)
    style: str = "turns"  # few_shot, few_shot_cached: "turns" (prior chat turns) or "block" (in the system message)
    format_text: str = ""  # instruction_format: the sentence on the answer's form (empty: the generic one)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise PlaygroundError(f"Unknown method '{self.method}'. Choose one of: {', '.join(METHODS)}.")
        if self.method in VIRTUAL_TOKEN_METHODS:  # virtual tokens: the prefix's own checks
            PrefixSettings(self.num_virtual_tokens, self.init, self.init_text, init_shots=self.init_shots).validate()
        if self.method != "prefix" and self.init == "demos":
            raise PlaygroundError("init 'demos' is for prefix tuning only: the examples' key/values go in every layer, "
                                  "and the MLP or prompt tuning can't hold them. Choose init 'task' for this method.")
        if self.method in VIRTUAL_TOKEN_METHODS and not METHODS[self.method].text_init and self.init != "random":
            raise PlaygroundError("Prefix tuning with the MLP can't start from text: PEFT cannot invert the MLP. "
                                  "Choose init 'random' for it, or the direct prefix for text init.")
        if self.method in FEW_SHOT_METHODS:
            if not (isinstance(self.shots, int) and 1 <= self.shots <= 32):
                raise PlaygroundError(f"Few-shot prompts take 1 to 32 examples; got {self.shots}.")
            if self.style not in STYLES:
                raise PlaygroundError(f"Few-shot style must be one of {', '.join(STYLES)}; got {self.style!r}.")
        if self.method == "lora":
            if not (isinstance(self.r, int) and 1 <= self.r <= 256):
                raise PlaygroundError(f"LoRA rank r must be a whole number from 1 to 256; got {self.r}.")
            if not self.target_modules:
                raise PlaygroundError("LoRA needs at least one target module, e.g. q_proj and v_proj.")


class PrefixMethod:
    """Prefix tuning (direct or through the MLP): a thin view of ``prefix.Prefix``."""

    mode = "prefix"  # the prompt format: the input alone, the prefix stands in for the instruction

    def __init__(self, prefix: Prefix, method: str):
        self.prefix, self.method = prefix, method

    def parameters(self):
        return self.prefix.parameters()

    def loss(self, base: BaseModel, ids, mask, labels, backbone=None) -> torch.Tensor:
        return target_loss(base, self.prefix, ids, mask, labels, backbone)

    def generate(self, base: BaseModel, prompts: list[list[int]], max_new_tokens: int, stop_ids=()) -> list[list[int]]:
        return greedy_mixed(base, prompts, [self.prefix] * len(prompts), max_new_tokens, stop_ids)

    @property
    def trainable_parameters(self) -> int:
        return self.prefix.trainable_parameters

    @property
    def stored_parameters(self) -> int:
        return self.prefix.exported_parameters

    def export(self, folder) -> None:
        """PEFT's files: the MLP folded away, as ``peft_folder.write_prefix`` saves them."""
        config, emb = self.prefix.exported()  # emb: [P, layers * 2 * token_dim]
        _write_adapter(folder, config, {"prompt_embeddings": emb})

    @property
    def extra_positions(self) -> int:
        return self.prefix.num_virtual_tokens


def prefix_method(prefix: Prefix) -> PrefixMethod:
    """A ``Prefix`` as a method, so ``training.train`` trains and scores it like any other."""
    return PrefixMethod(prefix, "prefix_mlp" if prefix.config.prefix_projection else "prefix")


class PromptMethod:
    """Prompt tuning: P trainable input embeddings (PEFT's ``PromptEmbedding``) in front of the prompt.

    The virtual tokens go through every layer like real tokens, so they take P key/value
    positions in every layer at inference too, but they are trained only at the input.
    """

    mode = "prefix"

    def __init__(self, encoder: torch.nn.Module, config: PromptTuningConfig):
        self.encoder, self.config = encoder, config  # encoder.embedding.weight: [P, hidden]

    @property
    def P(self) -> int:
        return self.config.num_virtual_tokens

    def parameters(self):
        return self.encoder.parameters()

    def _embeds(self, base: BaseModel, ids: torch.Tensor) -> torch.Tensor:
        """[virtual tokens; the ids' embeddings]: [batch, P + T, hidden], in the model's dtype."""
        words = base.model.get_input_embeddings()(ids)  # [batch, T, hidden]
        virtual = self.encoder.embedding.weight.to(words.dtype)  # [P, hidden]
        return torch.cat([virtual.unsqueeze(0).expand(ids.shape[0], -1, -1), words], dim=1)

    def loss(self, base: BaseModel, ids, mask, labels, backbone=None) -> torch.Tensor:
        """ids, mask, labels: [batch, T] (right-padded). The virtual tokens take positions 0..P-1, as in PEFT."""
        backbone = backbone if backbone is not None else getattr(base.model, base.model.base_model_prefix)
        B = ids.shape[0]
        full_mask = torch.cat([mask.new_ones(B, self.P), mask], dim=1)  # [batch, P + T]
        hidden = backbone(inputs_embeds=self._embeds(base, ids), attention_mask=full_mask,
                          use_cache=False).last_hidden_state  # [batch, P + T, hidden]
        pad = labels.new_full((B, self.P), -100)  # no loss on the virtual tokens
        return head_loss(base.model.get_output_embeddings(), hidden, torch.cat([pad, labels], dim=1))

    @torch.inference_mode()
    def generate(self, base: BaseModel, prompts: list[list[int]], max_new_tokens: int, stop_ids=()) -> list[list[int]]:
        """Greedy, batched. Rows are [virtual | left padding | prompt]; the mask hides the padding and
        positions skip it, so each row gets what it would alone (PEFT's prompt-tuning ``generate``)."""
        dev, B = base.device, len(prompts)
        if max_new_tokens <= 0:
            return [[] for _ in range(B)]
        ids, mask = pad_left(prompts, base.tokenizer.pad_token_id)  # [batch, T]
        ids, mask = ids.to(dev), mask.to(dev)
        mask = torch.cat([mask.new_ones(B, self.P), mask], dim=1)  # [batch, P + T]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [batch, P + T]: real tokens at P.. in every row
        out = base.model(inputs_embeds=self._embeds(base, ids), attention_mask=mask, position_ids=pos,
                         use_cache=True, logits_to_keep=1)
        return decode(base, out, mask, pos, [max_new_tokens] * B, stop_ids)

    @property
    def trainable_parameters(self) -> int:
        return self.encoder.embedding.weight.numel()

    stored_parameters = trainable_parameters

    @property
    def extra_positions(self) -> int:
        return self.P

    def export(self, folder) -> None:
        """PEFT's prompt-tuning files: ``PeftModel.from_pretrained`` loads them (tested)."""
        config = replace(self.config, inference_mode=True)
        _write_adapter(folder, config, {"prompt_embeddings": self.encoder.embedding.weight.detach()})  # [P, hidden]


class LoraMethod:
    """LoRA on a module copy of the shared model: the same weight tensors, its own adapter layers."""

    mode = "prefix"

    def __init__(self, peft_model: PeftModelForCausalLM):
        self.peft_model, self.config = peft_model, peft_model.peft_config["default"]  # kept for PEFT's state dict
        self.model = peft_model.base_model.model  # the copy, with LoRA layers in it (a *ForCausalLM)

    def view(self, base: BaseModel) -> BaseModel:
        """``base`` with this copy as its model, so the ordinary generation code runs through the adapters."""
        return replace(base, model=self.model, derived={})

    def parameters(self):
        return [p for n, p in self.model.named_parameters() if "lora_" in n]

    def loss(self, base: BaseModel, ids, mask, labels, backbone=None) -> torch.Tensor:
        """The copy's own backbone (its LoRA layers), not the shared ``backbone``. ids, mask, labels: [batch, T]."""
        hidden = getattr(self.model, self.model.base_model_prefix)(input_ids=ids, attention_mask=mask,
                                                                   use_cache=False).last_hidden_state
        return head_loss(self.model.get_output_embeddings(), hidden, labels)

    def generate(self, base: BaseModel, prompts: list[list[int]], max_new_tokens: int, stop_ids=()) -> list[list[int]]:
        return greedy_mixed(self.view(base), prompts, [None] * len(prompts), max_new_tokens, stop_ids)

    def merged(self, base: BaseModel) -> BaseModel:
        """``base`` with the adapters merged into new weights (W + scale·B·A) of the targeted layers only.

        What "no inference overhead once merged" means: plain Linear layers again. Uses PEFT's
        ``get_delta_weight``; the merged layers get tensors of their own, every other tensor is
        still the shared model's.
        """
        from peft.tuners.lora import LoraLayer

        merged = _shared_copy(base.model)
        layers = dict(merged.named_modules())
        with torch.no_grad():
            for name, module in self.model.named_modules():
                if isinstance(module, LoraLayer):
                    target = layers[name]  # the same path in the plain copy: a torch.nn.Linear
                    delta = module.get_delta_weight("default").to(target.weight.dtype)  # [out, in]
                    target.weight = torch.nn.Parameter(target.weight + delta, requires_grad=False)
        return replace(base, model=merged, derived={})

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    stored_parameters = trainable_parameters
    extra_positions = 0

    def export(self, folder) -> None:
        """PEFT's LoRA files, keys from PEFT's own ``get_peft_model_state_dict``: what ``save_pretrained``
        writes, and ``PeftModel.from_pretrained`` loads them (both tested)."""
        config = replace(self.config, inference_mode=True)
        # The adapter only, as before: PEFT's default "auto" also saves whole embedding matrices when an
        # embedding layer is targeted or the vocabulary was resized (never here), and may ask the Hub which.
        tensors = get_peft_model_state_dict(self.peft_model, save_embedding_layers=False)
        _write_adapter(folder, config, {k: v.detach() for k, v in tensors.items()})


class InstructionMethod:
    """The baseline: the task instruction as a system prompt, nothing trained."""

    mode = "instruction"

    def __init__(self, instruction: str):
        self.instruction = instruction

    def parameters(self):
        return []

    def loss(self, *a, **k):
        raise PlaygroundError("The instruction-prompt baseline has nothing to train.")

    def generate(self, base: BaseModel, prompts, max_new_tokens: int, stop_ids=()) -> list[list[int]]:
        return greedy_mixed(base, prompts, [None] * len(prompts), max_new_tokens, stop_ids)

    trainable_parameters = stored_parameters = extra_positions = 0

    def export(self, folder) -> None:
        raise PlaygroundError("The instruction prompt has nothing trained to export: it is just the task's text.")


class FewShotMethod(InstructionMethod):
    """The instruction and k demonstrations before each query (the query in prefix mode: its user turn).

    ``cached``: the demonstrations' key/values are computed once (``fewshot.TextCache``) and every query
    starts behind them, as behind a prefix; else they are prompt tokens of every query.
    """

    mode = "prefix"

    def __init__(self, base: BaseModel, instruction: str, demos: list[Example], style: str = "turns",
                 cached: bool = False):
        super().__init__(instruction)
        self.demos, self.head = demos, head_ids(base, instruction, demos, style)
        self.cache = TextCache(base, self.head) if cached else None

    def generate(self, base: BaseModel, prompts, max_new_tokens: int, stop_ids=()) -> list[list[int]]:
        if self.cache is not None:
            return greedy_mixed(base, prompts, [self.cache] * len(prompts), max_new_tokens, stop_ids)
        return greedy_mixed(base, [self.head + p for p in prompts], [None] * len(prompts), max_new_tokens, stop_ids)

    @property
    def extra_positions(self) -> int:
        """Cached key/value positions every query starts behind (the demonstrations', when cached)."""
        return len(self.head) if self.cache is not None else 0

    @property
    def prompt_tokens_added(self) -> int:
        """Tokens added to every query's prompt (the demonstrations', when not cached)."""
        return 0 if self.cache is not None else len(self.head)


class LabelScoringMethod(FewShotMethod):
    """The cached few-shot prompt, answering with the likeliest of ``labels`` (``labelscore.label_logprobs``)."""

    def __init__(self, base: BaseModel, instruction: str, demos: list[Example], labels: tuple[str, ...],
                 style: str = "turns"):
        super().__init__(base, instruction, demos, style, cached=True)
        fmt = PromptFormat.for_tokenizer(base.tokenizer)
        self.labels = labels
        # each label as the answer's first tokens, exactly as generation would write it (no end token)
        self.label_ids = [base.tokenizer(fmt.target(lab).removesuffix(fmt.end_text), add_special_tokens=False)
                          ["input_ids"] for lab in labels]

    def generate(self, base: BaseModel, prompts, max_new_tokens: int, stop_ids=()) -> list[list[int]]:
        best = label_logprobs(base, prompts, self.label_ids, self.cache).argmax(-1)  # [queries]
        return [self.label_ids[j][:max_new_tokens] for j in best.tolist()]


class BareMethod(InstructionMethod):
    """The base model as it is: the input alone, no instruction, nothing trained."""

    mode = "base"

    def __init__(self):
        super().__init__("")


def _write_adapter(folder, config, tensors: dict[str, torch.Tensor]) -> None:
    """adapter_config.json (PEFT's own writer) and adapter_model.safetensors into a new ``folder``."""
    from pathlib import Path

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))
    save_file({k: v.float().cpu().contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})


def exported_bytes(method) -> int:
    """Size of the adapter weights file ``method.export`` writes (0 for the instruction prompt)."""
    if isinstance(method, InstructionMethod):
        return 0
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="pg-export-") as tmp:
        method.export(Path(tmp) / "adapter")
        return (Path(tmp) / "adapter" / "adapter_model.safetensors").stat().st_size


def _shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """New modules around the same parameter and buffer tensors: adapters injected here leave ``model`` alone."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, shared)


def added_positions(base: BaseModel, settings: MethodSettings, instruction: str, train: list[Example],
                    seed: int = 0) -> tuple[int, int]:
    """(cached key/value positions, prompt tokens) that ``settings.method`` adds to every query, without
    building it: virtual tokens are cached positions; a few-shot prompt's demonstrations (drawn as
    ``create_method`` draws them) are one or the other."""
    if settings.method in ("instruction", "instruction_format"):  # the system message, prompted on every query
        text = instruction if settings.method == "instruction" else f"{instruction} {format_sentence(settings)}"
        return 0, len(head_ids(base, text.strip(), []))
    if settings.method == "prefix" and settings.init == "demos":  # as long as its demonstrations' tokens
        return sized(base, _prefix_settings(settings), instruction, train, seed).num_virtual_tokens, 0
    if settings.method not in FEW_SHOT_METHODS:
        return settings.num_virtual_tokens, 0
    H = len(head_ids(base, instruction, demonstrations(train, settings.shots, seed), settings.style))
    return (0, H) if settings.method == "few_shot" else (H, 0)


def format_sentence(settings: MethodSettings) -> str:
    return settings.format_text.strip() or GENERIC_FORMATS[0]


def create_method(base: BaseModel, settings: MethodSettings, instruction: str = "", seed: int = 0,
                  train: list[Example] | None = None):
    """A fresh, trainable instance of ``settings.method`` for ``base``, initialized as the settings say.

    Few-shot methods draw ``settings.shots`` demonstrations from ``train`` with ``seed``.
    """
    settings.validate()
    m = settings.method
    if m == "instruction":
        return InstructionMethod(instruction)
    if m == "instruction_format":
        return InstructionMethod(f"{instruction} {format_sentence(settings)}".strip())
    if m in FEW_SHOT_METHODS:
        if not train:
            raise PlaygroundError("A few-shot prompt needs the task's training examples to draw its demonstrations.")
        if m == "label_scoring":
            labels = labels_of(train)
            if not labels:
                raise PlaygroundError(f"Label scoring needs a classification task: at most {MAX_LABELS} answer labels, "
                                      "each seen at least twice in training. Use it on sentiment or topic.")
            return LabelScoringMethod(base, instruction, demonstrations(train, settings.shots, seed), labels,
                                      settings.style)
        return FewShotMethod(base, instruction, demonstrations(train, settings.shots, seed), settings.style,
                             cached=m == "few_shot_cached")
    if m in ("prefix", "prefix_mlp"):
        return PrefixMethod(create_prefix(base, _prefix_settings(settings), instruction, seed, train), m)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # seed without touching others' RNG
        torch.manual_seed(seed)
        warnings.simplefilter("ignore", FutureWarning)
        if m == "prompt":
            return _create_prompt(base, settings, instruction)
        config = LoraConfig(task_type="CAUSAL_LM", r=settings.r, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                            target_modules=list(settings.target_modules))
        try:
            peft_model = get_peft_model(_shared_copy(base.model), config)
        except ValueError as exc:  # PEFT names the modules it could not find
            raise PlaygroundError(f"LoRA could not attach to {list(settings.target_modules)}: {exc}. Name Linear "
                                  "layers of this model, e.g. q_proj and v_proj for Llama, c_attn for GPT-2.") from None
        for n, p in peft_model.named_parameters():
            p.requires_grad_("lora_" in n)
        return LoraMethod(peft_model)


def _prefix_settings(settings: MethodSettings) -> PrefixSettings:
    return PrefixSettings(settings.num_virtual_tokens, settings.init, settings.init_text,
                          settings.method == "prefix_mlp", settings.encoder_hidden_size, settings.init_shots)


def _create_prompt(base: BaseModel, settings: MethodSettings, instruction: str) -> PromptMethod:
    """PEFT's PromptEmbedding, text init through PEFT's own code (it reads the tokenizer from a folder)."""
    text = {"task": instruction, "text": settings.init_text}.get(settings.init, "")
    if settings.init != "random" and not text.strip():
        raise PlaygroundError("This task has no instruction text to initialize from; choose init 'text' or 'random'.")
    with tempfile.TemporaryDirectory(prefix="pg-tok-") as tmp:
        if text:
            base.tokenizer.save_pretrained(tmp)
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=settings.num_virtual_tokens,
                                    prompt_tuning_init="TEXT" if text else "RANDOM",
                                    prompt_tuning_init_text=text or None, tokenizer_name_or_path=tmp if text else None)
        wrapper = PeftModelForCausalLM(base.model, config)  # throwaway: PEFT fills in the shapes and runs the init
    encoder = wrapper.prompt_encoder["default"].float().to(base.device)
    encoder.requires_grad_(True)
    # The temporary tokenizer folder is gone now: keep a config that builds again without it
    # (the trained weights are what matter; a PeftModel made from it gets them copied in).
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=settings.num_virtual_tokens,
                                prompt_tuning_init="RANDOM", token_dim=config.token_dim,
                                num_transformer_submodules=config.num_transformer_submodules,
                                num_layers=config.num_layers, num_attention_heads=config.num_attention_heads)
    return PromptMethod(encoder, config)


def answer(base: BaseModel, method, inputs: list[str], instruction: str = "", max_new_tokens: int = 16,
           batch_size: int = 16) -> list[str]:
    """Decoded greedy answers of ``method`` for each input, prompted in ``method.mode`` (stop tokens dropped)."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    instruction = getattr(method, "instruction", "") or instruction  # a prompt method's own text (+ format)
    outs: list[str] = []
    for i in range(0, len(inputs), batch_size):
        prompts = [fmt.encode_prompt(x, method.mode, instruction) for x in inputs[i:i + batch_size]]
        outs += [answer_text(fmt, r) for r in method.generate(base, prompts, max_new_tokens, fmt.stop_ids)]
    return outs
