"""A prefix: PEFT's ``PrefixTuningConfig`` plus PEFT's ``PrefixEncoder``, kept beside the frozen model.

Why not keep one ``PeftModel`` with many adapters? ``PeftModel.generate`` temporarily swaps
``prepare_inputs_for_generation`` on the wrapped model and ``set_adapter`` is global state,
so two browser sessions sharing one model would race. Here a prefix is a small object that
turns into a key/value cache (exactly as ``PeftModel.get_prompt`` builds it) and is handed to
the shared model per call. Tests prove the logits equal plain PEFT's.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace

import torch
from peft import (
    PeftModelForCausalLM,
    PrefixTuningConfig,
    initialize_kv_prefix_from_past_key_values,
    initialize_kv_prefix_from_text,
)
from peft.tuners.prefix_tuning.model import PrefixEncoder
from transformers import DynamicCache

from .errors import PlaygroundError
from .fewshot import demonstrations, head_ids
from .models import BaseModel
from .prompts import PromptFormat
from .tasks import Example

MAX_VIRTUAL_TOKENS = 512  # beyond this the prefix dwarfs any toy prompt
INITS = ("task", "text", "demos", "random")
DEMO_SHOTS = 2  # training examples a "demos" prefix starts from by default (one or two labels' worth)
MAX_DEMO_SHOTS = 8  # more, and the prefix grows past a few hundred positions on the toy tasks


@dataclass
class PrefixSettings:
    """How to build a prefix. Field names follow PEFT's PrefixTuningConfig."""

    num_virtual_tokens: int = 20  # virtual key/value positions in every layer
    init: str = "task"  # "task": the instruction; "text": init_text; "demos": the instruction and init_shots
    #                     training examples (num_virtual_tokens becomes their token count); "random": PEFT's default
    init_text: str = ""  # used when init == "text"
    prefix_projection: bool = False  # train through an MLP (Li & Liang's reparameterization); dropped at export
    encoder_hidden_size: int = 256  # hidden width of that MLP
    init_shots: int = DEMO_SHOTS  # used when init == "demos": training examples drawn with the run's seed

    def validate(self) -> None:
        n = self.num_virtual_tokens
        if not isinstance(n, int) or not 1 <= n <= MAX_VIRTUAL_TOKENS:
            raise PlaygroundError(f"num_virtual_tokens must be a whole number from 1 to {MAX_VIRTUAL_TOKENS}; got {n}.")
        if self.init not in INITS:
            raise PlaygroundError(f"Unknown init '{self.init}'. Choose one of: {', '.join(INITS)}.")
        if self.init == "text" and not self.init_text.strip():
            raise PlaygroundError("init='text' needs an init text. Type a sentence, or choose init 'task' or 'random'.")
        k = self.init_shots
        if self.init == "demos" and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_DEMO_SHOTS):
            raise PlaygroundError(f"init='demos' starts the prefix from 1 to {MAX_DEMO_SHOTS} training examples; "
                                  f"got {k!r}. Choose a whole number of examples in that range.")
        if self.prefix_projection and self.init != "random":
            raise PlaygroundError(
                "Initializing from text needs the prefix itself to be trained (prefix_projection off): PEFT cannot "
                "invert the MLP. Turn the MLP reparameterization off, or choose init 'random'."
            )
        if self.prefix_projection and not 1 <= self.encoder_hidden_size <= 4096:
            raise PlaygroundError(f"encoder_hidden_size must be from 1 to 4096; got {self.encoder_hidden_size}.")


class Prefix:
    """Trainable (or loaded) virtual key/values for every layer of one base model."""

    def __init__(self, config: PrefixTuningConfig, encoder: PrefixEncoder, info: dict | None = None):
        self.config = config  # PEFT's config, token_dim etc. filled in for the base model
        self.encoder = encoder  # PEFT's PrefixEncoder: an Embedding, or Embedding + MLP
        self.info = info or {}  # the card: task, settings, metrics, base model, ...

    @property
    def num_virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    @property
    def device(self) -> torch.device:
        return self.encoder.embedding.weight.device

    def parameters(self):
        return self.encoder.parameters()

    @property
    def trainable_parameters(self) -> int:
        """What the optimizer updates now (with the MLP: embedding + MLP)."""
        return sum(p.numel() for p in self.encoder.parameters())

    @property
    def exported_parameters(self) -> int:
        """What is stored at export: P x layers x 2 x token_dim, whatever was trained."""
        c = self.config
        return c.num_virtual_tokens * c.num_layers * 2 * c.token_dim

    def embeddings(self) -> torch.Tensor:
        """PEFT's ``prompt_embeddings``: [num_virtual_tokens, layer * 2 * token_dim]."""
        tokens = torch.arange(self.num_virtual_tokens, device=self.device)
        if self.config.inference_mode:
            return self.encoder.embedding.weight
        return self.encoder(tokens)

    def key_values(self, batch: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (key, value), each [batch, kv_head, num_virtual_tokens, head_dim], as PEFT's get_prompt."""
        c = self.config
        P, H = c.num_virtual_tokens, c.num_attention_heads
        emb = self.embeddings().to(dtype)  # [P, layer*2*token_dim]
        kv = emb.view(P, c.num_layers * 2, H, c.token_dim // H)  # [P, layer*2, kv_head, head_dim]
        kv = kv.permute(1, 2, 0, 3)  # [layer*2, kv_head, P, head_dim]
        kv = kv.unsqueeze(1).expand(-1, batch, -1, -1, -1)  # [layer*2, batch, kv_head, P, head_dim]
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(c.num_layers)]

    def cache(self, batch: int, dtype: torch.dtype) -> DynamicCache:
        """A fresh DynamicCache holding the prefix; the model appends the real tokens to it."""
        return DynamicCache(self.key_values(batch, dtype))

    def exported(self) -> tuple[PrefixTuningConfig, torch.Tensor]:
        """(config, prompt_embeddings) as PEFT saves them: inference mode, MLP folded away."""
        config = PrefixTuningConfig(**{**asdict(self.config), "inference_mode": True})
        with torch.no_grad():
            emb = self.embeddings().detach().float().cpu().contiguous()
        return config, emb

    @classmethod
    def from_embeddings(cls, config: PrefixTuningConfig, emb: torch.Tensor, info: dict | None = None,
                        device: torch.device | str = "cpu") -> "Prefix":
        """A frozen prefix from saved PEFT embeddings [num_virtual_tokens, layer*2*token_dim]."""
        config = PrefixTuningConfig(**{**asdict(config), "inference_mode": True})
        encoder = PrefixEncoder(config)
        with torch.no_grad():
            encoder.embedding.weight.copy_(emb)
        encoder.requires_grad_(False)
        return cls(config, encoder.to(device), info)


def parameter_counts(base: BaseModel, settings: PrefixSettings) -> tuple[int, int]:
    """(trainable while training, stored at export) for these settings on ``base``, without building anything.

    Direct: an Embedding(P, L*2*token_dim). With the MLP (PEFT's PrefixEncoder):
    Embedding(P, token_dim) -> Linear(token_dim, h) -> Tanh -> Linear(h, L*2*token_dim); the
    export keeps only its output, the same P x L*2*token_dim either way. Tested against PEFT.
    """
    P, h = settings.num_virtual_tokens, settings.encoder_hidden_size
    token_dim = base.num_kv_heads * base.head_dim  # GQA: keys/values are stored per kv head
    out = base.num_layers * 2 * token_dim
    exported = P * out
    if not settings.prefix_projection:
        return exported, exported
    return P * token_dim + (token_dim * h + h) + (h * out + out), exported


def check_compatible(config: PrefixTuningConfig, base: BaseModel, what: str = "This prefix") -> None:
    """Fail with a readable message when a prefix's shapes don't fit the loaded model."""
    want = (base.num_layers, base.num_kv_heads, base.num_kv_heads * base.head_dim)
    have = (config.num_layers, config.num_attention_heads, config.token_dim)
    if want != have:
        raise PlaygroundError(
            f"{what} was made for another model: it has {have[0]} layers x {have[1]} kv heads (token_dim "
            f"{have[2]}), but the loaded model '{base.name}' has {want[0]} layers x {want[1]} kv heads (token_dim "
            f"{want[2]}). Load it with the model it was trained on, or train a new prefix here."
        )


def _init_text(base: BaseModel, fmt: PromptFormat, text: str, n: int) -> str:
    """Repeat a short text until it covers n tokens (PEFT takes the first n key/values of the text)."""
    def length(t: str) -> int:
        if fmt.chat:
            ids = base.tokenizer.apply_chat_template([{"role": "system", "content": t}], tokenize=True,
                                                     add_generation_prompt=False, return_dict=False)
            return len(ids)
        return len(base.tokenizer(t, add_special_tokens=False)["input_ids"])

    out = text
    while length(out) < n:
        out = f"{out} {text}"
    return out


def demo_head(base: BaseModel, settings: PrefixSettings, instruction: str, train: list[Example] | None,
              seed: int = 0) -> tuple[list[int], list[Example]]:
    """(token ids, demonstrations) a "demos" prefix starts from: the few-shot head (chat turns) of
    ``settings.init_shots`` examples drawn from ``train`` with ``seed``, as ``fewshot.TextCache`` caches it."""
    if not train:
        raise PlaygroundError("init='demos' needs the task's training examples to start the prefix from; "
                              "choose init 'task' or 'random' for a task without them.")
    if not instruction.strip():
        raise PlaygroundError("This task has no instruction text to initialize from; choose init 'text' or 'random'.")
    demos = demonstrations(train, settings.init_shots, seed)
    return head_ids(base, instruction, demos, "turns"), demos


def sized(base: BaseModel, settings: PrefixSettings, instruction: str = "", train: list[Example] | None = None,
          seed: int = 0) -> PrefixSettings:
    """``settings`` with the prefix length it will really have: for init "demos", the head's token count
    (a demonstration cut in half or repeated would make little sense); otherwise unchanged."""
    settings.validate()
    if settings.init != "demos":
        return settings
    P = len(demo_head(base, settings, instruction, train, seed)[0])
    if P > MAX_VIRTUAL_TOKENS:
        raise PlaygroundError(f"The instruction and {settings.init_shots} training examples take {P} tokens, above "
                              f"the {MAX_VIRTUAL_TOKENS} virtual tokens a prefix may have. Use fewer examples.")
    return replace(settings, num_virtual_tokens=P)


def create_prefix(base: BaseModel, settings: PrefixSettings, instruction: str = "", seed: int = 0,
                  train: list[Example] | None = None) -> Prefix:
    """A new trainable prefix for ``base``, initialized as the settings say.

    Builds a throwaway PeftModel around the frozen model so that PEFT fills in the shapes
    (GQA: token_dim = kv_heads x head_dim), builds its PrefixEncoder, and runs PEFT's own
    ``initialize_kv_prefix_from_text``. Only the encoder is kept.

    init "demos" (needs ``train``): the prefix is the key/values of the instruction followed by
    ``init_shots`` training examples as prior chat turns, loaded with PEFT's
    ``initialize_kv_prefix_from_past_key_values``; its length is that head's token count, so before
    any training it answers as the few-shot prompt does. The examples are drawn with ``seed``.
    """
    settings = sized(base, settings, instruction, train, seed)
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=settings.num_virtual_tokens,
        prefix_projection=settings.prefix_projection,
        encoder_hidden_size=settings.encoder_hidden_size,
    )
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # seed without touching others' RNG
        torch.manual_seed(seed)
        # PEFT asks transformers for the deprecated `is_gradient_checkpointing`; nothing for a learner to act on.
        warnings.simplefilter("ignore", FutureWarning)
        wrapper = PeftModelForCausalLM(base.model, config)
        info = {"settings": asdict(settings), "seed": seed}
        if settings.init == "demos":
            ids, demos = demo_head(base, settings, instruction, train, seed)
            _init_from_ids(wrapper, base, ids)
            info["init_demonstrations"] = [{"input": e.input, "target": e.target} for e in demos]
        elif settings.init != "random":
            text = instruction if settings.init == "task" else settings.init_text
            if not text.strip():
                raise PlaygroundError("This task has no instruction text to initialize from; choose init 'text' or 'random'.")
            text = _init_text(base, fmt, fmt.init_text(text), settings.num_virtual_tokens)
            initialize_kv_prefix_from_text(wrapper, base.tokenizer, text=text, use_chat_template=fmt.chat)
    encoder = wrapper.prompt_encoder["default"].float().to(base.device)  # train in fp32, cast to the model dtype
    encoder.requires_grad_(True)
    return Prefix(wrapper.peft_config["default"], encoder, info)


@torch.no_grad()
def _init_from_ids(wrapper: PeftModelForCausalLM, base: BaseModel, ids: list[int]) -> None:
    """Load the key/values of ``ids`` (all of them) into the wrapper's prefix, PEFT's layout:
    [P, layer*2*token_dim]. The keys carry rotary positions 0..P-1, and the query comes next."""
    x = torch.tensor([ids], device=base.device)  # [1, P]
    with wrapper.disable_adapter():
        out = wrapper(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True, logits_to_keep=1)
    initialize_kv_prefix_from_past_key_values(wrapper, past_key_values=out.past_key_values,
                                              num_virtual_tokens=len(ids))


def prefix_forward(base: BaseModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prefix: Prefix | None = None, module: torch.nn.Module | None = None, **kwargs):
    """One forward of the frozen model with the prefix prepended in every layer.

    input_ids, attention_mask: [batch, T]. The mask gains P ones in front, as PEFT's forward does;
    the model places the real tokens at positions P.. after the cached prefix. ``module`` runs
    instead of the whole LM, e.g. its backbone alone (default: ``base.model``).
    """
    module = module if module is not None else base.model
    if prefix is None:
        return module(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    B = input_ids.shape[0]
    ones = torch.ones(B, prefix.num_virtual_tokens, dtype=attention_mask.dtype, device=attention_mask.device)
    mask = torch.cat([ones, attention_mask], dim=1)  # [batch, P + T]
    return module(input_ids=input_ids, attention_mask=mask, past_key_values=prefix.cache(B, base.dtype), **kwargs)
