"""A compact GPT-NeoX for training mini-suites fast on a CPU: ``R`` same-shape replicas (seed
replicas) in one module, their weights stacked on a leading axis and run as batched matmuls.

Same mathematics as transformers' ``GPTNeoXForCausalLM`` (fused QKV laid out per head, rotary
on the first ``partial_rotary_factor`` of each head with NeoX's rotate-half, exact GELU, parallel
or sequential residual as the config says, untied head), with far fewer Python ops per layer:
``F.scaled_dot_product_attention(is_causal=True)``, one rotary pass for queries and keys
together, the bias folded into each matmul. Checkpoints are plain Hugging Face GPT-NeoX
folders (:meth:`NeoX.save_replica`: ``config.json`` + ``model.safetensors`` with HF's
state-dict names), so everything downstream loads them with ``GPTNeoXForCausalLM``;
tests/test_neox.py checks logits and gradients against it.

Replicas share nothing but the batch shape: each has its own weights, gradients, clipping norm
(:func:`clip_grad_norm_per_replica`) and AdamW state (AdamW is elementwise), so ``R`` replicas
trained together follow the same trajectories as ``R`` separate models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quanta._validation import QuantaInputError, check_int

__all__ = ["NeoX", "adamw", "clip_grad_norm_per_replica", "neox_training_step"]

# CPU flash attention at the suite's head sizes (32) is ~1.3x faster in float32 than in bf16
# (fwd + bwd, 16 x 4 heads x 256 x 32, one thread, CPU time; docs/BENCHMARKS.md).
_ATTENTION_F32 = True
_CHUNK_LOGITS = 2**18  # logits per chunk of the fused head loss (1 MiB of float32: a core's L2)

# Per layer: name in this module -> (HF name under gpt_neox.layers.<i>., shape given H, F=4H).
_LAYER = {
    "ln1_w": ("input_layernorm.weight", ("H",)),
    "ln1_b": ("input_layernorm.bias", ("H",)),
    "ln2_w": ("post_attention_layernorm.weight", ("H",)),
    "ln2_b": ("post_attention_layernorm.bias", ("H",)),
    "qkv_w": ("attention.query_key_value.weight", ("3H", "H")),
    "qkv_b": ("attention.query_key_value.bias", ("3H",)),
    "out_w": ("attention.dense.weight", ("H", "H")),
    "out_b": ("attention.dense.bias", ("H",)),
    "fc_w": ("mlp.dense_h_to_4h.weight", ("F", "H")),
    "fc_b": ("mlp.dense_h_to_4h.bias", ("F",)),
    "proj_w": ("mlp.dense_4h_to_h.weight", ("H", "F")),
    "proj_b": ("mlp.dense_4h_to_h.bias", ("H",)),
}
_TOP = {
    "embed": "gpt_neox.embed_in.weight",
    "lnf_w": "gpt_neox.final_layer_norm.weight",
    "lnf_b": "gpt_neox.final_layer_norm.bias",
    "head": "lm_head.weight",
}


def _check_config(config: Any) -> None:
    """What this implementation covers of ``GPTNeoXConfig``; anything else is refused."""
    rope = getattr(config, "rope_parameters", None) or {}
    unsupported = {
        "hidden_act": (config.hidden_act, "gelu"),
        "attention_bias": (getattr(config, "attention_bias", True), True),
        "tie_word_embeddings": (config.tie_word_embeddings, False),
        "rope_type": (rope.get("rope_type", "default"), "default"),
        "hidden_size % num_attention_heads": (config.hidden_size % config.num_attention_heads, 0),
    }
    for key, (got, allowed) in unsupported.items():
        if got != allowed:
            raise QuantaInputError(
                f"NeoX supports GPT-NeoX configs with {key} = {allowed!r}; got {got!r}."
            )


class NeoX(nn.Module):
    """``replicas`` GPT-NeoX causal LMs of one ``GPTNeoXConfig``, weights stacked on axis 0.

    Parameters
    ----------
    config : transformers.GPTNeoXConfig
        The architecture (saved verbatim with every checkpoint).
    replicas : int
        Number of models ``R`` trained side by side (default 1).
    generator : torch.Generator, optional
        Initialisation randomness (HF's scheme: weights N(0, initializer_range²), biases 0,
        layer norms 1/0); replica ``r`` draws after replicas ``0 … r-1``.
    device : torch device of the parameters.
    """

    def __init__(
        self,
        config: Any,
        *,
        replicas: int = 1,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        _check_config(config)
        check_int(replicas, "replicas", "NeoX", low=1)
        self.config = config
        self.replicas = replicas
        hidden, heads = config.hidden_size, config.num_attention_heads
        self.heads, self.head_size = heads, hidden // heads
        self.rot = int(self.head_size * config.rope_parameters.get("partial_rotary_factor", 1.0))
        self.eps = config.layer_norm_eps
        self.parallel = bool(config.use_parallel_residual)
        dims = {"H": hidden, "3H": 3 * hidden, "F": config.intermediate_size}
        self.layers = nn.ModuleList()
        for _ in range(config.num_hidden_layers):
            layer = nn.Module()
            for name, (_, shape) in _LAYER.items():
                size = (replicas, *(dims[d] for d in shape))
                layer.register_parameter(name, nn.Parameter(torch.empty(size, device=device)))
            self.layers.append(layer)
        vocab = config.vocab_size
        self.embed = nn.Parameter(torch.empty(replicas, vocab, hidden, device=device))
        self.lnf_w = nn.Parameter(torch.empty(replicas, hidden, device=device))
        self.lnf_b = nn.Parameter(torch.empty(replicas, hidden, device=device))
        self.head = nn.Parameter(torch.empty(replicas, vocab, hidden, device=device))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """HF GPT-NeoX initialisation, replica by replica from ``generator``."""
        std = self.config.initializer_range
        with torch.no_grad():
            for r in range(self.replicas):
                for name, p in self._named_stacked():
                    if "layer_norm" in name or "layernorm" in name:
                        p[r].fill_(1.0 if name.endswith("weight") else 0.0)
                    elif name.endswith("bias"):
                        p[r].zero_()
                    else:
                        cpu = torch.empty(p.shape[1:]).normal_(0.0, std, generator=generator)
                        p[r].copy_(cpu)

    def _named_stacked(self) -> list[tuple[str, nn.Parameter]]:
        """(HF name, stacked parameter) for every weight, in HF's state-dict order."""
        out = [(_TOP["embed"], self.embed)]
        for i, layer in enumerate(self.layers):
            for name, (hf, _) in _LAYER.items():
                out.append((f"gpt_neox.layers.{i}.{hf}", getattr(layer, name)))
        out += [(_TOP["lnf_w"], self.lnf_w), (_TOP["lnf_b"], self.lnf_b)]
        out.append((_TOP["head"], self.head))
        return out

    # -- the forward pass ------------------------------------------------------------------
    def _rotary(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, 1, rot] of NeoX's rotary (HF's default rope) at positions 0 … T-1."""
        theta = self.config.rope_parameters.get("rope_theta", 10000.0)
        dim = self.rot
        inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
        freqs = torch.arange(length, device=device, dtype=torch.float)[:, None] * inv
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (T, 1, rot)
        return emb.cos(), emb.sin()

    def _attention(self, x: torch.Tensor, layer: Any, cos: Any, sin: Any) -> torch.Tensor:
        """Causal self-attention of ``x`` [R, B, T, H] -> [R, B, T, H]."""
        r, b, t, h = x.shape
        nh, hs, rot = self.heads, self.head_size, self.rot
        qkv = _linear(x, layer.qkv_w, layer.qkv_b).view(r * b, t, nh, 3 * hs)
        qk, v = qkv[..., : 2 * hs].unflatten(-1, (2, hs)), qkv[..., 2 * hs :]  # (RB, T, nh, 2, hs)
        if rot:
            part = qk[..., :rot]
            half = rot // 2
            turned = torch.cat((-part[..., half:], part[..., :half]), dim=-1)
            c, s = cos[:, :, None].to(part.dtype), sin[:, :, None].to(part.dtype)
            qk = torch.cat((part * c + turned * s, qk[..., rot:]), dim=-1)
        q, k = (t.transpose(1, 2) for t in qk.unbind(-2))  # (RB, nh, T, hs)
        v = v.transpose(1, 2)
        if _ATTENTION_F32 and q.dtype == torch.bfloat16 and q.device.type == "cpu":
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(r, b, t, h)
        return _linear(y, layer.out_w, layer.out_b)

    def _mlp(self, x: torch.Tensor, layer: Any) -> torch.Tensor:
        return _linear(F.gelu(_linear(x, layer.fc_w, layer.fc_b)), layer.proj_w, layer.proj_b)

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-layer-normed hidden states [R, B, T, H] of ``input_ids`` [B, T] (every replica
        reads the same tokens) or [R, B, T]."""
        ids = _per_replica(input_ids, self.replicas)
        r, _, t = ids.shape
        vocab = self.config.vocab_size
        offset = torch.arange(r, device=ids.device)[:, None, None] * vocab
        x = F.embedding(ids + offset, self.embed.view(r * vocab, -1))  # (R, B, T, H)
        cos, sin = self._rotary(t, ids.device)
        blocks: list[Any] = list(self.layers)  # parameters set by name in __init__
        for layer in blocks:
            a = self._attention(_layer_norm(x, layer.ln1_w, layer.ln1_b, self.eps), layer, cos, sin)
            if self.parallel:
                x = x + a + self._mlp(_layer_norm(x, layer.ln2_w, layer.ln2_b, self.eps), layer)
            else:
                x = x + a
                x = x + self._mlp(_layer_norm(x, layer.ln2_w, layer.ln2_b, self.eps), layer)
        return _layer_norm(x, self.lnf_w, self.lnf_b, self.eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [R, B, T, vocab] of ``input_ids`` [B, T] or [R, B, T]."""
        return _linear(self.hidden_states(input_ids), self.head, None)

    def loss(self, input_ids: torch.Tensor, *, fused: bool = True) -> torch.Tensor:
        """Next-token cross-entropy of each replica [R] (nats, mean over its B × (T-1)
        predictions; HF's ``labels=input_ids`` loss), logits in float32.

        ``fused`` (when gradients are wanted): the head matmul and the cross-entropy in
        chunks of tokens with their gradients computed on the way (:class:`_HeadLoss`), so
        the [tokens, vocab] logits never exist whole; else the plain autograd path."""
        ids = _per_replica(input_ids, self.replicas)
        h = self.hidden_states(ids)[:, :, :-1]
        target = ids[:, :, 1:].reshape(self.replicas, -1)  # (R, N)
        if fused and torch.is_grad_enabled():
            dtype = torch.get_autocast_dtype(h.device.type)
            low = dtype if torch.is_autocast_enabled(h.device.type) else torch.float32
            flat = h.reshape(self.replicas, -1, h.shape[-1])
            losses: torch.Tensor = _HeadLoss.apply(flat, self.head, target, low)
            return losses
        logits = _linear(h, self.head, None).float()  # (R, B, T-1, V)
        each = F.cross_entropy(
            logits.view(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
        )
        return each.view(self.replicas, -1).mean(dim=1)

    # -- checkpoints -------------------------------------------------------------------------
    def replica_state_dict(self, replica: int) -> dict[str, torch.Tensor]:
        """HF ``GPTNeoXForCausalLM`` state dict of one replica (float32 copies, CPU)."""
        check_int(replica, "replica", "NeoX.replica_state_dict", low=0, high=self.replicas - 1)
        return {k: p[replica].detach().float().cpu().clone() for k, p in self._named_stacked()}

    def load_replica_state_dict(self, replica: int, state: dict[str, torch.Tensor]) -> None:
        """Set one replica's weights from an HF GPT-NeoX state dict (same config)."""
        with torch.no_grad():
            for name, p in self._named_stacked():
                if name not in state:
                    raise QuantaInputError(f"The GPT-NeoX state dict has no '{name}'.")
                p[replica].copy_(state[name])

    def save_replica(self, replica: int, path: str | Path) -> None:
        """Write replica ``replica`` as a Hugging Face GPT-NeoX folder (``config.json`` +
        ``model.safetensors``), loadable by ``GPTNeoXForCausalLM.from_pretrained``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        from transformers import GenerationConfig

        # What GPTNeoXForCausalLM.save_pretrained records of itself, so the folders match.
        self.config.architectures = ["GPTNeoXForCausalLM"]
        self.config.dtype = torch.float32
        self.config.save_pretrained(str(path))
        GenerationConfig.from_model_config(self.config).save_pretrained(str(path))
        state = self.replica_state_dict(replica)
        save_file(state, str(path / "model.safetensors"), {"format": "pt"})

    def non_embedding_params(self) -> int:
        """Parameters of one replica minus the input and output embedding matrices."""
        embeddings = self.embed[0].numel() + self.head[0].numel()
        return sum(p[0].numel() for _, p in self._named_stacked()) - embeddings


def _per_replica(ids: torch.Tensor, replicas: int) -> torch.Tensor:
    if ids.dim() == 2:
        return ids.unsqueeze(0).expand(replicas, *ids.shape)
    if ids.dim() != 3 or ids.shape[0] != replicas:
        raise QuantaInputError(
            f"NeoX input_ids must be [batch, T] or [{replicas}, batch, T]; got {tuple(ids.shape)}."
        )
    return ids


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w[r].T + b[r]`` per replica: x [R, ..., in], w [R, out, in], b [R, out] or None."""
    if w.shape[0] == 1:  # one model: a plain (addmm) linear, the cheapest path
        return F.linear(x, w[0], None if b is None else b[0])
    shape = x.shape
    flat = x.reshape(shape[0], -1, shape[-1])  # (R, N, in)
    if b is None:
        y = torch.bmm(flat, w.transpose(1, 2))
    else:
        y = torch.baddbmm(b.unsqueeze(1).to(flat.dtype), flat, w.transpose(1, 2).to(flat.dtype))
    return y.view(*shape[:-1], w.shape[1])


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis with each replica's gain and bias (x [R, ..., H])."""
    if w.shape[0] == 1:
        return F.layer_norm(x, x.shape[-1:], w[0], b[0], eps)
    view = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[1],)
    return F.layer_norm(x, x.shape[-1:], None, None, eps) * w.view(view) + b.view(view)


class _HeadLoss(torch.autograd.Function):
    """Mean cross-entropy per replica of ``h @ w[r].T`` against ``target``, chunk by chunk.

    Forward also computes the gradients (softmax − one-hot) for chunks of ~2¹⁸ logits, which
    stay in a core's L2 cache; backward only scales them by the incoming gradient. Matmuls in
    ``dtype`` (bf16 under autocast), the softmax in float32 (one fused kernel, the only
    pass of ``exp``: the loss is −log of its target entry, :func:`_nll`); the head's gradient
    is accumulated in float32 over the chunks."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, target: Any, dtype: Any) -> Any:
        r, n, _ = h.shape  # h (R, N, H), w (R, V, H), target (R, N)
        chunk = max(1, _CHUNK_LOGITS // w.shape[1])
        wl = w.to(dtype)
        losses = torch.zeros(r, dtype=torch.float32, device=h.device)
        grad_h = torch.empty(h.shape, dtype=h.dtype, device=h.device)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=h.device)
        minus_one = torch.full((1, 1, 1), -1.0, device=h.device)
        for s in range(0, n, chunk):
            hc, t = h[:, s : s + chunk].to(dtype), target[:, s : s + chunk, None]
            logits = torch.bmm(hc, wl.transpose(1, 2)).float()  # (R, c, V)
            p = logits.softmax(-1)
            losses += _nll(p, logits, t).sum((1, 2))
            g = p.scatter_add_(-1, t, minus_one.expand(t.shape))  # softmax - one-hot
            g = g.div_(n).to(dtype)  # d(mean loss) / d(logits)
            grad_h[:, s : s + chunk] = torch.bmm(g, wl)
            grad_w += torch.bmm(g.transpose(1, 2), hc)
        ctx.save_for_backward(grad_h, grad_w)
        return losses / n

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        grad_h, grad_w = ctx.saved_tensors
        scale = grad.view(-1, 1, 1)
        return grad_h * scale.to(grad_h.dtype), grad_w * scale, None, None


def _nll(p: torch.Tensor, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """−log p[target] per token (R, c, 1) from the softmax ``p`` (one ``exp`` pass for loss
    and gradient); where p[target] is below float32's normal range (a target more than ~69
    nats below the best logit) the exact logsumexp − logit of those rows instead."""
    pt = p.gather(-1, t)
    nll = -pt.log()
    small = pt < 1e-30
    if bool(small.any()):
        exact = logits.logsumexp(-1, keepdim=True) - logits.gather(-1, t)
        nll = torch.where(small, exact, nll)
    return nll


def clip_grad_norm_per_replica(model: NeoX, max_norm: float = 1.0) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` applied to each replica on its own: every replica's
    gradient (all its parameters together) is scaled to L2 norm ≤ ``max_norm``. Returns the
    norms before clipping [R]."""
    if model.replicas == 1:  # torch's own, on all gradients at once (foreach kernels)
        params = list(model.parameters())
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True).view(1)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    squares = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)  # (R,)
    norms = squares.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))
    return norms


def adamw(model: NeoX, lr: float) -> torch.optim.AdamW:
    """Pythia's AdamW (β = 0.9, 0.95; weight decay 0.01) over ``model``'s parameters, fused
    (one kernel for all parameters, not ~8 ops per tensor: 3-8% of a small size's step on
    a CPU, docs/BENCHMARKS.md) where the device has the fused kernel."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01, fused=fused or None
    )


def neox_training_step(model: NeoX, opt: Any, sched: Any, x: Any, *, bf16: bool) -> list[float]:
    """One optimizer step of every replica on the token batch ``x`` ([B, T] shared, or
    [R, B, T]); returns each replica's loss (nats). bf16 autocast on the matmuls when ``bf16``
    (weights, gradients and AdamW state float32); clipping at 1.0 per replica (Pythia's)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        losses = model.loss(x)
    losses.sum().backward()
    clip_grad_norm_per_replica(model, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return [float(v) for v in losses.detach()]
