"""all-MiniLM-L6-v2 in NumPy: a 6-layer BERT encoder, mean pooling, L2 normalisation.

Why NumPy: the weights ship as safetensors; running them needs no torch, no ONNX export step
and no GGUF conversion, and with OpenBLAS on two cores it embeds faster than the published
model needs (see ``benchmarks/README.md``). Tokenisation is Hugging Face ``tokenizers`` reading
the model's own ``tokenizer.json``. The output matches sentence-transformers' reference vectors
(``tests/fixtures/minilm_reference.npz``, cosine ≥ 0.999).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from concierge.models.base import EmbeddingModel, Embeddings

F32 = NDArray[np.float32]

# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): longer
# inputs are truncated, exactly as the reference implementation does.
MAX_SEQ_LENGTH = 256


# Abramowitz & Stegun 7.1.26: erf(z) = 1 - t(a1 + t(a2 + ...)) exp(-z^2), t = 1 / (1 + p z).
_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(
    np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


def _erf(x: F32) -> F32:
    """erf to float32 precision (|error| < 6e-7 with float32 rounding), computed in place.

    GELU runs over the largest activations in the model; this form takes a sixth of the time
    of a longer series with fresh arrays at every step.
    """
    z = np.abs(x)
    t = z * _ERF_P
    t += 1
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = _ERF_A
    poly = t * a5
    for a in (a4, a3, a2, a1):
        poly += a
        poly *= t
    np.multiply(z, z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # erfc(|x|)
    np.subtract(np.float32(1), poly, out=poly)
    out: F32 = np.copysign(poly, x, out=poly)
    return out


def _gelu(x: F32) -> F32:
    out = _erf(x * np.float32(0.7071067811865476))
    out += 1
    out *= x
    out *= np.float32(0.5)
    return out


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return cast(F32, ((x - mean) / np.sqrt(var + eps)) * weight + bias)


class BertEncoder:
    """A BERT forward pass over safetensors weights (inference only, float32)."""

    def __init__(self, model_dir: Path) -> None:
        config = json.loads((model_dir / "config.json").read_text())
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        w = load_file(str(model_dir / "model.safetensors"))
        self.w = {k: v.astype(np.float32) for k, v in w.items() if v.dtype != np.int64}
        # Pre-transpose projection matrices once: x @ W.T for every Linear.
        for key in list(self.w):
            if key.endswith(".weight") and self.w[key].ndim == 2 and "embeddings" not in key:
                self.w[key] = np.ascontiguousarray(self.w[key].T)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self.tokenizer.no_padding()

    def _linear(self, x: F32, prefix: str) -> F32:
        return cast(F32, x @ self.w[prefix + ".weight"] + self.w[prefix + ".bias"])

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def encode_ids(self, batch: list[list[int]]) -> F32:
        """Sentence embeddings (mean-pooled, L2-normalised) for token id lists.

        Position-wise work (projections, GELU, layer norms) runs on the packed tokens, without
        padding; only attention sees the padded (batch, length) layout.
        """
        n, length = len(batch), max(len(ids) for ids in batch)
        mask = np.zeros((n, length), dtype=bool)
        for i, row in enumerate(batch):
            mask[i, : len(row)] = True
        ids = np.concatenate([np.asarray(row, dtype=np.int64) for row in batch])
        positions = np.concatenate([np.arange(len(row)) for row in batch])
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][positions]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        head_dim = self.hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(head_dim))
        attn_bias = np.where(mask, np.float32(0.0), np.float32(-1e9))[:, None, None, :]

        def heads(packed: F32) -> F32:
            padded = np.zeros((n, length, self.hidden), dtype=np.float32)
            padded[mask] = packed
            return padded.reshape(n, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q = heads(self._linear(x, p + "attention.self.query"))
            k = heads(self._linear(x, p + "attention.self.key"))
            v = heads(self._linear(x, p + "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + attn_bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3)[mask].reshape(-1, self.hidden)
            x = _layer_norm(
                self._linear(ctx, p + "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            inter = _gelu(self._linear(x, p + "intermediate.dense"))
            x = _layer_norm(
                self._linear(inter, p + "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self.eps,
            )
        lengths = mask.sum(axis=1)
        pooled = np.add.reduceat(x, np.concatenate([[0], np.cumsum(lengths)[:-1]]), axis=0)
        pooled /= lengths[:, None].astype(np.float32)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> tuple[F32, int]:
        """Embeddings for ``texts`` in input order, and the number of tokens read."""
        token_ids = self.tokenize(texts)
        # Batch texts of similar length together: far less padding, same results.
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        out = np.empty((len(token_ids), self.hidden), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.encode_ids([token_ids[i] for i in idx])
        return out, sum(len(ids) for ids in token_ids)


class MiniLMEmbeddings(EmbeddingModel):
    """The embedded all-MiniLM-L6-v2 backend. Work runs on one thread, off the event loop."""

    owned_by = "concierge-embedded"
    dimensions = 384
    max_input_tokens = MAX_SEQ_LENGTH

    def __init__(
        self, model_id: str, model_dir: Path | Callable[[], Path], batch_size: int = 32
    ) -> None:
        self.model_id = model_id
        self._model_dir = model_dir
        self.batch_size = batch_size
        self._encoder: BertEncoder | None = None
        self._counter: Tokenizer | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")

    def load(self) -> None:
        """Read the weights (blocking; idempotent). Called on the embedding thread."""
        if self._encoder is None:
            path = self._model_dir() if callable(self._model_dir) else self._model_dir
            self._encoder = BertEncoder(path)

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def count_tokens(self, text: str) -> int:
        if self._counter is None:  # its own tokenizer: the encoder's truncates
            path = self._model_dir() if callable(self._model_dir) else self._model_dir
            counter = Tokenizer.from_file(str(path / "tokenizer.json"))
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def _encode(self, texts: Sequence[str]) -> tuple[F32, int]:
        self.load()
        assert self._encoder is not None
        return self._encoder.encode(texts, self.batch_size)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        loop = asyncio.get_running_loop()
        vectors, tokens = await loop.run_in_executor(self._executor, self._encode, list(texts))
        return Embeddings(vectors=vectors, prompt_tokens=tokens)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
