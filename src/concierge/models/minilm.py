"""all-MiniLM-L6-v2 on ONNX Runtime: a 6-layer BERT encoder, mean pooling, L2 normalisation.

The weights ship as safetensors. At load time they are laid into an ONNX graph built here from
ONNX Runtime's fused transformer operators (``EmbedLayerNormalization``, ``Attention``,
``SkipLayerNormalization``, ``BiasGelu``): no torch, no export step, no converted file on disk.
On two cores this embeds 1.8-2.4x faster than the NumPy forward pass it replaced, and its output
matches sentence-transformers' reference vectors (``tests/fixtures/minilm_reference.npz``,
cosine ≥ 0.9999999); figures in ``benchmarks/README.md``. Tokenisation is Hugging Face
``tokenizers`` reading the model's own ``tokenizer.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from concierge.models.base import EmbeddingModel, Embeddings

F32 = NDArray[np.float32]

# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): longer
# inputs are truncated, exactly as the reference implementation does.
MAX_SEQ_LENGTH = 256
# Texts of similar length are batched together, up to this many tokens with padding: larger
# batches run slower on two cores (their activations fall out of cache; 1024 measured 8-10 %
# faster than 2048 on SciFact passages).
MAX_BATCH_TOKENS = 1024
_MS = "com.microsoft"


def build_graph(model_dir: Path) -> bytes:
    """The encoder as a serialised ONNX model: input_ids, segment_ids and mask (int32,
    batch x length) in, the last hidden states (float32, batch x length x hidden) out."""
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    heads, layers = int(config["num_attention_heads"]), int(config["num_hidden_layers"])
    eps = float(config["layer_norm_eps"])
    weights = load_file(str(model_dir / "model.safetensors"))
    inits: list[Any] = []
    nodes: list[Any] = []

    def w(name: str, transpose: bool = False) -> NDArray[np.float32]:
        array = weights[name].astype(np.float32)
        return array.T if transpose else array

    def init(name: str, array: NDArray[np.float32]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        domain = "" if op == "MatMul" else _MS
        nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attrs))
        return output

    e = "embeddings."
    embed = [
        init("word", w(e + "word_embeddings.weight")),
        init("position", w(e + "position_embeddings.weight")),
        init("segment", w(e + "token_type_embeddings.weight")),
        init("embed_gamma", w(e + "LayerNorm.weight")),
        init("embed_beta", w(e + "LayerNorm.bias")),
    ]
    nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            ["input_ids", "segment_ids", *embed, "mask"],
            ["x0", "mask_index"],
            domain=_MS,
            epsilon=eps,
        )
    )
    x = "x0"
    for n in range(layers):
        p = f"encoder.layer.{n}."
        qkv = ("query", "key", "value")
        qkv_w = np.concatenate([w(f"{p}attention.self.{m}.weight", True) for m in qkv], axis=1)
        qkv_b = np.concatenate([w(f"{p}attention.self.{m}.bias") for m in qkv])
        a = node(
            "Attention",
            [x, init(f"qkv_w{n}", qkv_w), init(f"qkv_b{n}", qkv_b), "mask_index"],
            f"attention{n}",
            num_heads=heads,
        )
        a = node(
            "MatMul", [a, init(f"out_w{n}", w(p + "attention.output.dense.weight", True))], f"a{n}"
        )
        h = node(
            "SkipLayerNormalization",
            [
                a,
                x,
                init(f"ln1_g{n}", w(p + "attention.output.LayerNorm.weight")),
                init(f"ln1_b{n}", w(p + "attention.output.LayerNorm.bias")),
                init(f"out_b{n}", w(p + "attention.output.dense.bias")),
            ],
            f"h{n}",
            epsilon=eps,
        )
        f = node("MatMul", [h, init(f"up_w{n}", w(p + "intermediate.dense.weight", True))], f"u{n}")
        f = node("BiasGelu", [f, init(f"up_b{n}", w(p + "intermediate.dense.bias"))], f"g{n}")
        f = node("MatMul", [f, init(f"down_w{n}", w(p + "output.dense.weight", True))], f"d{n}")
        x = node(
            "SkipLayerNormalization",
            [
                f,
                h,
                init(f"ln2_g{n}", w(p + "output.LayerNorm.weight")),
                init(f"ln2_b{n}", w(p + "output.LayerNorm.bias")),
                init(f"down_b{n}", w(p + "output.dense.bias")),
            ],
            f"x{n + 1}",
            epsilon=eps,
        )
    int_input = [
        helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "length"])
        for name in ("input_ids", "segment_ids", "mask")
    ]
    hidden = int(config["hidden_size"])
    output = helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "length", hidden])
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", int_input, [output], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="concierge")
    return bytes(model.SerializeToString())


def quantize_int8(graph: bytes) -> bytes:
    """The graph with int8 weights in its matrix products and attention (ONNX Runtime's dynamic
    quantization: per-channel, 7-bit weights, which stay accurate on CPUs without VNNI)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class _QuietAdvice(logging.Filter):  # the quantizer recommends a pass this graph does not need
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    quiet = _QuietAdvice()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="concierge-int8-") as folder:
            target = Path(folder) / "int8.onnx"
            quantize_dynamic(
                onnx.load_from_string(graph),
                target,
                op_types_to_quantize=["MatMul", "Attention"],
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            return target.read_bytes()
    finally:
        root.removeFilter(quiet)


class BertEncoder:
    """A BERT encoder with sentence-transformers' mean pooling (inference only): float32, or
    with ``int8`` its dynamically quantized form."""

    def __init__(self, model_dir: Path, threads: int | None = None, int8: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Idle worker threads sleep instead of spinning: spinning burnt ~4 ms of CPU per short
        # query (taken from the rest of the server under load) and made batches no faster.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.hidden = int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
        graph = build_graph(model_dir)
        self.session = ort.InferenceSession(
            quantize_int8(graph) if int8 else graph, options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self.tokenizer.no_padding()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def encode_ids(self, batch: list[list[int]]) -> F32:
        """Sentence embeddings (mean-pooled, L2-normalised) for token id lists."""
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int32)
        mask = np.zeros((n, length), dtype=np.int32)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        (hidden,) = self.session.run(
            None, {"input_ids": ids, "segment_ids": np.zeros_like(ids), "mask": mask}
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def plan(
        self, texts: Sequence[str], batch_size: int = 32
    ) -> tuple[list[tuple[list[int], list[list[int]]]], int]:
        """``texts`` tokenised and grouped into batches of similar length (far less padding,
        same results): ``(positions, token id lists)`` per batch, and the tokens read."""
        token_ids = self.tokenize(texts)
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        batches = []
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and end - start < batch_size
                and (end - start + 1) * len(token_ids[order[end]]) <= MAX_BATCH_TOKENS
            ):
                end += 1
            idx = order[start:end]
            batches.append((idx, [token_ids[i] for i in idx]))
            start = end
        return batches, sum(len(ids) for ids in token_ids)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> tuple[F32, int]:
        """Embeddings for ``texts`` in input order, and the number of tokens read."""
        batches, tokens = self.plan(texts, batch_size)
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        for idx, ids in batches:
            out[idx] = self.encode_ids(ids)
        return out, tokens


class MiniLMEmbeddings(EmbeddingModel):
    """The embedded all-MiniLM-L6-v2 backend. Work queues for one worker thread, off the event
    loop; ONNX Runtime spreads each batch over the cores. With ``int8``, the quantized encoder:
    about 1.4x the speed, vectors at cosine ~0.99 to the float32 ones (benchmarks/README.md).

    A call is queued one batch at a time: calls take turns on the thread (a request of 2,048
    long inputs does not hold everyone else's one-line query for its whole run), and a call
    that is cancelled (its client went away) stops after the batch that is running."""

    holds_weights = True

    owned_by = "concierge-embedded"
    dimensions = 384
    max_input_tokens = MAX_SEQ_LENGTH

    def __init__(
        self,
        model_id: str,
        model_dir: Path | Callable[[], Path],
        batch_size: int = 32,
        int8: bool = False,
    ) -> None:
        self.model_id = model_id
        self._model_dir = model_dir
        self.batch_size = batch_size
        self.int8 = int8
        self._encoder: BertEncoder | None = None
        self._counter: Tokenizer | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")

    def load(self) -> None:
        """Read the weights (blocking; idempotent). Called on the embedding thread."""
        if self._encoder is None:
            path = self._model_dir() if callable(self._model_dir) else self._model_dir
            self._encoder = BertEncoder(path, int8=self.int8)

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

    def _plan(self, texts: Sequence[str]) -> tuple[list[tuple[list[int], list[list[int]]]], int]:
        self.load()
        assert self._encoder is not None
        return self._encoder.plan(texts, self.batch_size)

    def _batch(self, ids: list[list[int]]) -> F32:
        assert self._encoder is not None
        return self._encoder.encode_ids(ids)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        loop = asyncio.get_running_loop()
        batches, tokens = await loop.run_in_executor(self._executor, self._plan, list(texts))
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for idx, ids in batches:
            vectors[idx] = await loop.run_in_executor(self._executor, self._batch, ids)
        return Embeddings(vectors=vectors, prompt_tokens=tokens)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
