"""The PRM's model: any HF causal LM or VLM, a step marker token, and a reward head.

The Qwen2.5-Math-PRM recipe: after each step the text carries a marker (a special token
added to the tokenizer), and a small head reads the last hidden state at each marker and
says how likely the solution is still right after that step. A causal model sees only the
steps so far at each marker, so one forward pass scores every step.

On disk a PRM is an ordinary HF model directory (the LM or VLM, LoRA merged in, with the
marker in its tokenizer) plus ``reward_head.safetensors`` and ``prm_config.json``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prmtree.engine.errors import ConfigError
from prmtree.engine.records import decode_rgb
from prmtree.export.rows import defuse

MARKER = "<step>"
PRM_CONFIG = "prm_config.json"
HEAD_FILE = "reward_head.safetensors"
PAD, UNK = "[PAD]", "[UNK]"


def lm_body(lm: nn.Module) -> nn.Module:
    """A causal LM's (or VLM's) body, whose output is the last hidden state its LM head reads:
    what transformers names its ``base_model`` (the submodule ``base_model_prefix`` names:
    ``.model`` for Qwen2, Llama or LLaVA, ``.transformer`` for GPT-2, Bloom or Falcon,
    ``.gpt_neox`` for GPT-NeoX). A peft model is looked through to the model it adapts.

    Before, the body was ``lm.model`` or else the LM itself: for GPT-2 and the others the
    whole LM, whose vocabulary logits then reached the reward head (a shape error)."""
    if hasattr(lm, "get_base_model"):  # peft: PeftModel.base_model is its LoraModel, not the LM's body
        lm = lm.get_base_model()
    prefix = getattr(lm, "base_model_prefix", "") or ""
    body = getattr(lm, prefix, None) if prefix else None
    if not isinstance(body, nn.Module) or body is lm:
        body = getattr(lm, "model", None)
    if not isinstance(body, nn.Module) or body is lm:
        raise ConfigError(f"{type(lm).__name__}: cannot find the model's body (its base_model_prefix "
                          f"{prefix!r} names no submodule): the reward head reads the body's last hidden state")
    return body


class RewardModel(nn.Module):
    """An LM's body and a two-layer head: one logit per token, read at the markers.

    With ``step_logprobs`` the head also reads how surprised the LM was by the step: the
    log-probability of each of the step's tokens under the same model, pooled two ways
    (an attention over the step's tokens that the head learns, and the minimum). A model
    that has learnt what a right step says (pretraining) then tells a wrong result by its
    surprise at it, which the hidden state at the marker does not carry on its own: a
    small model fine-tuned on marker states alone learns the step's position, not its
    arithmetic (measured, benchmarks/README.md section 10).
    """

    #: Features pooled from the step's token log-probabilities: learnt attention, minimum.
    N_FEATURES = 2
    #: Log-probabilities below this are read as this: the head sees "very surprised", not -inf.
    FLOOR = -20.0

    def __init__(self, lm: nn.Module, hidden_size: int, step_logprobs: bool = False) -> None:
        super().__init__()
        lm_body(lm)  # a model whose body cannot be found is refused here, not at the first batch
        self.lm = lm
        self.step_logprobs = step_logprobs
        width = hidden_size + (self.N_FEATURES if step_logprobs else 0)
        self.head = nn.Sequential(nn.Linear(width, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1))
        self.pool = nn.Linear(hidden_size, 1) if step_logprobs else None

    def body(self) -> nn.Module:
        """The model without its LM head, LoRA layers in place: :func:`lm_body` of the LM."""
        return lm_body(self.lm)

    def head_state(self) -> dict[str, torch.Tensor]:
        """What ``reward_head.safetensors`` holds: the head's weights, and the pooling's as ``pool.*``."""
        state = dict(self.head.state_dict())
        if self.pool is not None:
            state.update({f"pool.{k}": v for k, v in self.pool.state_dict().items()})
        return state

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k: v for k, v in state.items() if not k.startswith("pool.")})
        if self.pool is not None:
            self.pool.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("pool.")})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_lm: bool = False,
                step_ids: torch.Tensor | None = None, **extra: Any) -> Any:
        """Reward logits (B, T); with ``with_lm`` also the LM's next-token logits from the same pass.

        ``step_ids`` (B, T) says which step each token belongs to (k >= 0), which marker
        closes which step (-(k + 2) at step k's marker), -1 elsewhere; the step-logprob
        head needs it (:meth:`Encoder.collate` makes it).
        """
        hidden = self.body()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
        states = hidden.last_hidden_state if hasattr(hidden, "last_hidden_state") else hidden[0]
        lm_logits = self.lm.get_output_embeddings()(states) if with_lm or self.step_logprobs else None
        features = states.to(self.head[0].weight.dtype)
        if self.step_logprobs:
            if step_ids is None:
                raise ValueError("this PRM's head reads step log-probabilities: pass step_ids (Encoder.collate)")
            features = torch.cat([features, self.step_features(input_ids, states, lm_logits, step_ids)
                                  .to(features.dtype)], dim=-1)
        rewards = self.head(features).squeeze(-1)
        return (rewards, lm_logits) if with_lm else rewards

    def step_features(self, input_ids: torch.Tensor, states: torch.Tensor, lm_logits: torch.Tensor,
                      step_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, N_FEATURES): at the marker closing step k, step k's pooled token log-probabilities."""
        b, t = input_ids.shape
        logprobs = torch.zeros((b, t), dtype=torch.float32, device=input_ids.device)
        # token i's log-probability is read from the logits at i - 1
        logprobs[:, 1:] = lm_logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        logprobs = logprobs.clamp(min=self.FLOOR)
        n_steps = int(step_ids.max().item()) + 1 if step_ids.numel() else 0  # markers are negative
        out = torch.zeros((b, t, self.N_FEATURES), dtype=torch.float32, device=input_ids.device)
        if n_steps <= 0:
            return out
        member = step_ids[:, None, :] == torch.arange(n_steps, device=step_ids.device)[None, :, None]  # (B, K, T)
        has = member.any(-1)  # (B, K)
        scores = self.pool(states.to(self.pool.weight.dtype)).squeeze(-1).float()  # (B, T)
        weights = scores[:, None, :].masked_fill(~member, float("-inf")).softmax(-1).nan_to_num(0.0)
        pooled = (weights * logprobs[:, None, :]).sum(-1)
        lowest = logprobs[:, None, :].masked_fill(~member, 0.0).amin(-1)
        per_step = torch.stack([pooled, lowest], dim=-1) * has[..., None]  # (B, K, 2); a step with no tokens: 0
        # each step's features go to its marker (a BPE may put a token of its own between the two)
        rows, cols = (step_ids <= -2).nonzero(as_tuple=True)
        steps = -step_ids[rows, cols] - 2
        known = steps < n_steps  # a marker whose step has no tokens gets zeros
        out[rows[known], cols[known]] = per_step[rows[known], steps[known]]
        return out


@dataclass
class Encoder:
    """Turns (question, images, steps) into model inputs with a marker after each step.

    ``processor`` is a tokenizer for a text model, or a VLM's processor. The question goes
    through the chat template where the tokenizer has one, as the policy would have seen it.
    """

    processor: Any
    marker: str = MARKER
    max_length: int = 1024
    vision: bool = False

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def marker_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.marker))

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id or 0)

    def prompt(self, question: str, n_images: int) -> str:
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if not template:
            return question + "\n"
        content: Any = question
        if self.vision and n_images:
            content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        apply = getattr(self.processor, "apply_chat_template", None) or self.tokenizer.apply_chat_template
        return apply(messages, tokenize=False, add_generation_prompt=True)

    @functools.cached_property
    def reserved(self) -> tuple[str, ...]:
        """Text the tokenizer or processor reads as a token of its own (``<image>``, ``<|im_end|>``,
        the other added tokens), longest first. A question or step holding one (a LLaVA-style
        ``<image>\n`` question) is defused as the exports defuse it: left as text, it became an
        image slot with no image (the processor raised) or a turn's end."""
        tok = self.tokenizer
        found = set(getattr(tok, "all_special_tokens", ()) or ())
        found |= {str(t.content) for t in (getattr(tok, "added_tokens_decoder", None) or {}).values()
                  if getattr(t, "special", False)}  # not GPT-NeoX's added runs of spaces: ordinary text
        found |= {getattr(self.processor, name, None) for name in ("image_token", "video_token")}
        return tuple(sorted((t for t in found if isinstance(t, str) and len(t) >= 2 and t.strip() == t
                             and t != self.marker), key=lambda t: (-len(t), t)))

    def _clean(self, text: str) -> str:
        return defuse(text.replace(self.marker, " "), self.reserved)

    def _step(self, step: str) -> str:
        return defuse(" ".join(step.replace(self.marker, " ").split()), self.reserved)

    def text(self, question: str, steps: list[str], n_images: int = 0) -> str:
        return self._layout(question, steps, n_images)[0]

    def _layout(self, question: str, steps: list[str], n_images: int) -> tuple[str, list[tuple[int, int]]]:
        """The model's text, and where each step's own text lies in it (without the space,
        marker and newline after it)."""
        text = self.prompt(self._clean(question), n_images)
        spans = []
        for step in steps:
            step = self._step(step)
            spans.append((len(text), len(text) + len(step)))
            text += f"{step} {self.marker}\n"
        return text, spans

    def encode(self, question: str, steps: list[str], images: list[bytes] | None = None) -> dict[str, Any]:
        """``input_ids`` (a list), the marker positions, each step's token span, and the processor's image tensors.

        Only the markers after the prompt are the steps': a marker that the chat template
        also writes (``--marker "<|im_end|>"``) is left out where the prompt holds it.
        Before, every marker token counted, and each label went to the step before its own.
        """
        images = list(images or []) if self.vision else []
        text, char_spans = self._layout(question, steps, len(images))
        extra: dict[str, torch.Tensor] = {}
        if images:
            pil = [decode_rgb(b) for b in images]
            out = self.processor(text=[text], images=pil, return_tensors="pt")
            ids = out["input_ids"][0].tolist()
            extra = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
            offsets = self._aligned_offsets(text, ids)
            keep = max(self.max_length, self._image_end(ids))  # image tokens must stay whole
            if len(ids) > keep:  # text past --max-length is cut, as a text row's is
                extra = {k: v[:, :keep] if _per_token(v, len(ids)) else v for k, v in extra.items()}
                ids, offsets = ids[:keep], offsets[:keep] if offsets is not None else None
        else:
            fast = bool(getattr(self.tokenizer, "is_fast", False))
            out = self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=self.max_length,
                                 return_offsets_mapping=fast)
            ids, offsets = out["input_ids"], out.get("offset_mapping") if fast else None
        head = text[:char_spans[0][0]] if char_spans else text
        in_prompt = (self.tokenizer(head, add_special_tokens=False)["input_ids"].count(self.marker_id)
                     if self.marker in head else 0)
        positions = [i for i, t in enumerate(ids) if t == self.marker_id][in_prompt:]
        spans = self._token_spans(steps, char_spans, positions, offsets)
        return {"ids": ids, "positions": positions, "spans": spans, "extra": extra}

    @functools.cached_property
    def _image_ids(self) -> frozenset[int]:
        """The ids of the processor's image (and video) tokens, which it repeats per image patch."""
        tokens = {getattr(self.processor, name, None) for name in ("image_token", "video_token")}
        ids = {self.tokenizer.convert_tokens_to_ids(t) for t in tokens if isinstance(t, str) and t}
        ids |= {getattr(self.processor, name, None) for name in ("image_token_id", "video_token_id")}
        return frozenset(i for i in ids if isinstance(i, int) and i >= 0 and i != self.tokenizer.unk_token_id)

    def _image_end(self, ids: list[int]) -> int:
        """The index after the last image token; all of ``ids`` where none is known (it cannot be
        told where the images end, and a cut through them fails in the model)."""
        found = [i for i, t in enumerate(ids) if t in self._image_ids]
        return found[-1] + 1 if found else len(ids)

    def _aligned_offsets(self, text: str, ids: list[int]) -> list[tuple[int, int]] | None:
        """Character offsets for a VLM processor's ``ids`` (processors give none): the text after
        the last image token is tokenized as the tokenizer alone tokenizes it (the processor
        only repeats the image tokens), so the two agree from the end; tokens before it get
        (0, 0), in no step. None where the tokenizer gives no offsets or they do not agree."""
        if not getattr(self.tokenizer, "is_fast", False):
            return None
        plain = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        plain_ids, plain_offsets = plain["input_ids"], plain["offset_mapping"]
        last = max((i for i, t in enumerate(plain_ids) if t in self._image_ids), default=-1)
        tail = plain_ids[last + 1:]
        lead = len(ids) - len(tail)
        if lead < 0 or ids[lead:] != tail:
            return None
        return [(0, 0)] * lead + [tuple(o) for o in plain_offsets[last + 1:]]

    def _token_spans(self, steps: list[str], char_spans: list[tuple[int, int]], positions: list[int],
                     offsets: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
        """Each step's tokens, [start, end), for the step-logprob head: by character offsets where
        the tokenizer gives them (a byte-level BPE puts the space before a marker and the
        newline after it in tokens of their own, which are not the step's), else between markers."""
        if offsets is not None:
            spans, after = [], 0
            for (lo, hi), marker in zip(char_spans, positions):
                inside = [i for i in range(after, marker) if lo <= offsets[i][0] < hi]
                spans.append((inside[0], inside[-1] + 1) if inside else (marker, marker))
                after = marker + 1
            return spans
        # no offsets (a slow tokenizer, or a VLM processor's ids that do not align with its tokenizer's):
        # step 0 has as many tokens before its marker as it has alone
        starts = [p + 1 for p in positions[:-1]]
        if positions:
            first = self._step(steps[0])
            starts.insert(0, max(0, positions[0] - len(self.tokenizer(first, add_special_tokens=False)["input_ids"])))
        return list(zip(starts, positions))

    def collate(self, encoded: list[dict[str, Any]], targets: list[list[float]] | None = None) -> dict[str, Any]:
        """Right-padded tensors; ``targets`` (B, T) holds each step's target at its marker, -1 elsewhere;
        ``step_ids`` (B, T) the step each token belongs to, -(k + 2) at step k's marker, -1 elsewhere."""
        width = max(len(e["ids"]) for e in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        target = torch.full((len(encoded), width), -1.0)
        step_ids = torch.full((len(encoded), width), -1, dtype=torch.long)
        for i, e in enumerate(encoded):
            n = len(e["ids"])
            ids[i, :n] = torch.tensor(e["ids"])
            mask[i, :n] = 1
            for k, (start, end) in enumerate(e.get("spans", [])):
                step_ids[i, start:end] = k
            for k, pos in enumerate(e["positions"]):
                step_ids[i, pos] = -(k + 2)
            if targets is not None:
                for pos, t in zip(e["positions"], targets[i]):
                    target[i, pos] = t
        extra: dict[str, torch.Tensor] = {}
        for key in {k for e in encoded for k in e["extra"]}:
            extra[key] = torch.cat([e["extra"][key] for e in encoded if key in e["extra"]])
        return {"input_ids": ids, "attention_mask": mask, "targets": target, "step_ids": step_ids, "extra": extra}


def _per_token(value: Any, length: int) -> bool:
    """Whether a processor output holds one value per token (``token_type_ids``): cut with the ids."""
    return isinstance(value, torch.Tensor) and value.dim() == 2 and tuple(value.shape) == (1, length)


# -- building ----------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """``--device`` as torch will use it: ``auto`` is CUDA where there is one, else the CPU; a
    device this machine lacks (``cuda`` without CUDA, ``mps`` off a Mac) or a name torch
    does not know is a one-line error here, not a traceback at the first tensor moved."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a device torch knows: use cpu, cuda, cuda:N, mps or auto") from None
    kind = parsed.type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); "
                          "use --device cpu or auto")
    if kind == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use --device cpu or auto")
    return device


def tiny_tokenizer(texts: list[str], marker: str = MARKER) -> Any:
    """A word-level tokenizer trained on the training texts (digits split), the marker a special token.

    The marker is taken out of the texts first: a marker that is also a word of them
    (``--marker step``) was given a second id by the trainer, which left a hole in the
    ids, so the largest id was past the embeddings (an IndexError at the first batch)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.train_from_iterator((t.replace(marker, " ") for t in texts),
                            trainers.WordLevelTrainer(special_tokens=[PAD, UNK, marker]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK)


def load_tiny_tokenizer(directory: str | Path) -> Any:
    """The tiny tokenizer as saved (AutoTokenizer would take the model's Qwen2 class and add tokens)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(Path(directory) / "tokenizer.json"), pad_token=PAD, unk_token=UNK)


def tiny_lm(vocab_size: int, pad_id: int, layers: int = 2, hidden: int = 128) -> nn.Module:
    """A small Qwen2 causal LM: by default 2 layers, hidden 128 (4 heads of 32), about 0.3M
    parameters plus embeddings; heads of 32, half as many key-value heads (all of them for
    an odd head count, which half would not divide)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    heads = max(1, hidden // 32)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads // 2 if heads % 2 == 0 else heads,
        max_position_embeddings=4096,
        pad_token_id=pad_id, tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


def is_vision_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def load_lm(path: str | Path, bf16: bool = False) -> tuple[nn.Module, Any, bool]:
    """An HF model directory or Hub id: (model, tokenizer or processor, is it a VLM).

    The class comes from the config: a config with a ``vision_config`` (LLaVA, Qwen2-VL,
    ...) loads as an image-text-to-text model with its processor, anything else as a
    causal LM with its tokenizer.
    """
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--model {path}: not a Hugging Face model directory or Hub id "
                          f"({str(exc).splitlines()[0]}); or use --model tiny") from None
    new = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit()) >= (4, 56)
    dtype = {("dtype" if new else "torch_dtype"): torch.bfloat16 if bf16 else torch.float32}
    vision = is_vision_config(config)
    if vision:
        model = AutoModelForImageTextToText.from_pretrained(str(path), **dtype)
        processor = AutoProcessor.from_pretrained(str(path))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **dtype)
        processor = AutoTokenizer.from_pretrained(str(path))
    return model, processor, vision


def add_marker(lm: nn.Module, processor: Any, marker: str) -> None:
    """The marker becomes a special token; the embeddings grow when it is new."""
    tok = getattr(processor, "tokenizer", processor)
    tok.add_tokens([marker], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    embeddings = lm.get_input_embeddings().weight.shape[0]
    if len(tok) > embeddings:
        lm.resize_token_embeddings(len(tok))


def hidden_size(lm: nn.Module) -> int:
    """The width of the states the body gives, which the reward head reads: the LM head's input
    width (the LM head reads the same states), else the config's ``hidden_size`` (an alias of
    GPT-2's ``n_embd`` in transformers' configs), ``n_embd`` or ``d_model``. The LM head's
    width is what the body outputs even where the config's ``hidden_size`` is not (OPT's
    ``word_embed_proj_dim``)."""
    output = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    weight = getattr(output, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[1])
    config = lm.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(f"{type(lm).__name__}: its config gives no hidden size (hidden_size, n_embd or d_model)")


#: The projections LoRA adapts where a model names them this way (Llama, Qwen, Mistral, LLaVA's LM...).
LORA_PROJECTIONS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def lora_targets(lm: nn.Module) -> list[str] | str:
    """The layers LoRA adapts: the attention and MLP projections where they are named
    ``q_proj``-style; otherwise peft's own table for the architecture (GPT-2's and
    GPTBigCode's ``c_attn``, a Conv1D; GPT-NeoX's, Bloom's and Falcon's fused
    ``query_key_value``), so that any causal LM peft knows can be trained with ``--lora``."""
    linear = {n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)}
    targets = sorted(linear & LORA_PROJECTIONS)
    if targets:
        return targets
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as BY_TYPE

    config = getattr(lm, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = getattr(text, "model_type", None) or getattr(config, "model_type", None)
    known = BY_TYPE.get(model_type)
    names = {n.rsplit(".", 1)[-1] for n, _ in lm.named_modules()}
    if isinstance(known, str):  # a pattern over module paths: peft matches it itself
        return known
    if known and set(known) <= names:
        return list(known)
    raise ConfigError(f"--lora: no layers to adapt in {type(lm).__name__} (model type {model_type!r}): it has no "
                      f"q_proj/v_proj-style projections and peft names none for it; its linear layers: "
                      f"{sorted(linear)[:8]}")


def apply_lora(lm: nn.Module, rank: int = 16) -> nn.Module:
    """LoRA adapters on the attention (and MLP) projections (peft); the head stays fully trained."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("--lora needs peft: pip install 'prmtree[train]' (or pip install peft)") from None
    targets = lora_targets(lm)
    # GPT-2's Conv1D stores its weight transposed: peft must be told, or it warns and guesses
    conv1d = any(type(m).__name__ == "Conv1D" for n, m in lm.named_modules()
                 if isinstance(targets, list) and n.rsplit(".", 1)[-1] in targets)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, fan_in_fan_out=conv1d)
    return get_peft_model(lm, config)


def save_prm(model: RewardModel, processor: Any, out: Path, prm_config: dict[str, Any]) -> None:
    """The HF model (LoRA merged), its tokenizer or processor, the head and ``prm_config.json``."""
    from safetensors.torch import save_file

    lm = model.lm
    if hasattr(lm, "merge_and_unload"):
        import copy

        lm = copy.deepcopy(lm).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.head_state().items()}, str(out / HEAD_FILE))
    (out / PRM_CONFIG).write_text(json.dumps(prm_config, indent=2, sort_keys=True) + "\n")


def read_prm_config(config_file: Path) -> dict[str, Any]:
    """``prm_config.json``, or a one-line ConfigError saying what is wrong with it: a damaged
    copy (cut short, ``{}``) would otherwise fail as a JSONDecodeError or KeyError traceback."""
    try:
        prm_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{config_file} is damaged (not JSON: {exc}); restore it from a copy, "
                          "or train the PRM again") from None
    if not isinstance(prm_config, dict):
        raise ConfigError(f"{config_file} is damaged: a JSON object expected, got {type(prm_config).__name__}")
    for key in ("model_class", "marker"):
        if not isinstance(prm_config.get(key), str) or not prm_config[key]:
            raise ConfigError(f"{config_file} is damaged: no {key!r} (a string); restore it from a copy, "
                              "or train the PRM again")
    max_length = prm_config.get("max_length", 4096)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"{config_file} is damaged: 'max_length' must be a whole number >= 1, got {max_length!r}")
    return prm_config


def load_prm(path: str | Path, device: str = "cpu") -> tuple[RewardModel, Encoder, dict[str, Any]]:
    """A PRM directory written by :func:`save_prm`."""
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoProcessor, AutoTokenizer

    path = Path(path)
    config_file = path / PRM_CONFIG
    if not config_file.is_file():
        raise ConfigError(f"{path} is not a PRM directory (no {PRM_CONFIG}): train one with prmtree train")
    prm_config = read_prm_config(config_file)
    cls = getattr(transformers, prm_config["model_class"], None)
    if cls is None:
        raise ConfigError(f"{path}: transformers {transformers.__version__} has no {prm_config['model_class']}")
    lm = cls.from_pretrained(str(path))
    vision = bool(prm_config.get("vision"))
    if prm_config.get("base_model") == "tiny":
        processor = load_tiny_tokenizer(path)
    else:
        processor = AutoProcessor.from_pretrained(str(path)) if vision else AutoTokenizer.from_pretrained(str(path))
    model = RewardModel(lm, hidden_size(lm), step_logprobs=bool(prm_config.get("step_logprobs")))
    model.load_head_state(load_file(str(path / HEAD_FILE)))
    model.to(device).eval()
    encoder = Encoder(processor, prm_config["marker"], int(prm_config.get("max_length", 4096)), vision)
    return model, encoder, prm_config
