"""`M3Encoder`: texts -> `EncodedBatch` with an M3 model, in one backbone pass per piece of text.

Pipeline: validate -> add the spec's query/passage prefix -> tokenize everything once (tokenizers' parallel
batch encode, no truncation unless `max_length` asks) -> cut long texts into windows (`windows.py`) -> sort
the pieces by length and batch them under a token budget (`batching.py`) -> backbone + heads under
`torch.inference_mode` -> BGE-M3's post-processing -> merge the pieces of each text -> caller's order.

Post-processing is FlagEmbedding's (inference/embedder/encoder_only/m3.py):
- dense: the pooled state (CLS or mean, from the spec), L2-normalised;
- lexical weights: relu(sparse_linear(h)) per token, max over a token id's occurrences, the cls/eos/pad/unk
  ids dropped, zeros dropped;
- token vectors: normalize(colbert_linear(h)) for every position after CLS up to and including the final
  `</s>`, pads dropped.

The model is moved to its device once, at load. CPU runs fp32 (optionally int8 dynamic quantization of the
backbone's Linear layers); CUDA runs bf16/fp16 with PyTorch's SDPA attention (not exercised by the tests:
they run on CPU). On out-of-memory the token budget is halved and the remaining batches re-planned.
"""
from __future__ import annotations

import collections
import contextlib
import logging
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from m3search.encoder.base import Encoder, Kind, check_kind, validate_texts
from m3search.encoder.batching import plan_batches
from m3search.encoder.checkpoint import LoadedModel, load_m3_model
from m3search.encoder.postprocess import merge_pieces
from m3search.encoder.terms import DEFAULT_SCHEME, SparseTerms
from m3search.encoder.limits import DEFAULT_MAX_DOC_TOKENS, check_limit, check_token_counts
from m3search.encoder.windows import DEFAULT_OVERLAP, MCLS_EVERY, Piece, make_pieces
from m3search.errors import ConfigError, InputError, ModelError
from m3search.types import EncodedBatch, EncoderIdentity

logger = logging.getLogger(__name__)

# Padded tokens per forward pass. On CPU small batches keep activations in cache: 1024-2048 measured fastest
# (bench/encode_throughput.py, 2 cores), 4096 ~15% slower.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}
# At or below this many padded tokens a CPU forward pass runs on one thread: a query's matrices are too
# small to split, and on a busy machine each 2-thread OpenMP op waited ~20 ms for its second thread
# (bench/cold_start.py).
SINGLE_THREAD_TOKENS = 256
LongDense = Literal["mean", "first"]


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantization of the backbone's Linear layers (CPU only; weights int8, activations per batch).

    torch.ao.quantization.quantize_dynamic is deprecated in favour of torchao but still the only int8 path
    with fast kernels (fbgemm) in a stock CPU build; torch warns about the deprecation when it is used.
    """
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


class M3Encoder(Encoder):
    """Encode texts with a BGE-M3-layout model. Build with `M3Encoder.from_pretrained(folder)`.

    Options:
      batch_tokens:   padded tokens per forward pass (default 2048 on CPU, 32768 on CUDA).
      window_tokens:  longest piece, special tokens included (default: the model's limit, e.g. 8192 for
                      BGE-M3, 512 for m3search-small). Longer texts are cut into overlapping windows.
      window_overlap: content tokens shared by consecutive windows (default 64).
      long_dense:     dense vector of a multi-window text: "mean" of the windows' vectors (renormalised) or
                      the "first" window's.
      mcls:           MCLS: True inserts a CLS every 256 tokens (an int: every that many) and pools the dense
                      vector over all CLS states. Meant for CLS-pooled models such as BGE-M3.
      quantize:       None or "int8" (CPU only): dynamic int8 Linear layers, faster, slightly different output
                      (bench/encode_throughput.py measures the cost). Converts the given model in place.
      progress:       show a progress bar over batches.
      max_doc_tokens: refuse (TextTooLongError) a text of more tokens than this unless max_length cuts it
                      (default 8192, BGE-M3's longest input).
      sparse_terms:   how the lexical weights become sparse terms (`terms.py`): "pieces" (default, BGE-M3's
                      max per piece id), "pieces-nopunct", "pieces+words", "pieces+words-nopunct".
      onnx:           run the backbone's layers with ONNX Runtime (`ort_backbone.py`; CPU, fp32, native
                      backbone, no int8): None (default) uses it when `m3search[onnx]` is installed and
                      M3SEARCH_ONNX is not 0, True requires it, False never. Same outputs to ~1e-6, faster.
                      Batches of at most SINGLE_THREAD_TOKENS padded tokens stay in torch (one thread).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        batch_tokens: int | None = None,
        window_tokens: int | None = None,
        window_overlap: int = DEFAULT_OVERLAP,
        long_dense: LongDense = "mean",
        mcls: bool | int = False,
        quantize: str | None = None,
        progress: bool = False,
        max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS,
        onnx: bool | None = None,
        sparse_terms: str = DEFAULT_SCHEME,
    ):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.spec = loaded.spec
        self.device = next(self.model.parameters()).device
        if long_dense not in ("mean", "first"):
            raise ConfigError(f"long_dense must be 'mean' or 'first', got {long_dense!r}")
        self.long_dense = long_dense
        self.max_doc_tokens = check_limit(max_doc_tokens)
        self.window_tokens = int(window_tokens or self.spec.max_positions)
        if not 3 <= self.window_tokens <= self.spec.max_positions:
            raise ConfigError(
                f"window_tokens must be between 3 and the model's limit {self.spec.max_positions}, got {window_tokens}"
            )
        if window_overlap < 0:
            raise ConfigError(f"window_overlap must be >= 0, got {window_overlap}")
        self.window_overlap = int(window_overlap)
        if mcls is True:
            self.mcls_every: int | None = MCLS_EVERY
        elif mcls is False or mcls is None:
            self.mcls_every = None
        elif isinstance(mcls, int) and mcls >= 1:
            self.mcls_every = mcls
        else:
            raise ConfigError(f"mcls must be True, False or a token period >= 1, got {mcls!r}")
        self.batch_tokens = int(batch_tokens or DEFAULT_BATCH_TOKENS.get(self.device.type, 8192))
        if self.batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be >= 1, got {batch_tokens}")
        self.progress = progress
        self.quantize = quantize
        if quantize is not None:
            if quantize != "int8":
                raise ConfigError(f"quantize must be None or 'int8', got {quantize!r}")
            if self.device.type != "cpu":
                raise ConfigError(f"quantize='int8' runs on CPU only; this model is on {self.device}")
            quantize_int8(self.model.backbone)
        self.runtime = self._choose_runtime(onnx)
        if not self.spec.heads_trained:
            logger.warning(
                "model %r: its sparse and multi-vector heads are untrained (deterministic initialisation); "
                "dense output is meaningful, lexical weights and token vectors are not yet",
                self.spec.name,
            )
        self._identity: EncoderIdentity | None = None
        self.terms = SparseTerms(sparse_terms, self.vocab_size, self.token_strings)

    def _choose_runtime(self, onnx: bool | None) -> str:
        """"onnxruntime" when the layers run there (see `onnx` in the class docstring), else "torch"."""
        from m3search.encoder.native import NativeEncoder

        backbone = self.model.backbone
        if isinstance(backbone, NativeEncoder):
            backbone.disable_onnx()  # int8 changed the layers in place, or onnx=False: torch
        if onnx is False:
            return "torch"
        why = None
        if not isinstance(backbone, NativeEncoder):
            why = "the backbone is not one `native.py` runs"
        elif self.device.type != "cpu" or backbone.word.dtype != torch.float32:
            why = "it runs on CPU in fp32 only"
        elif self.quantize is not None:
            why = "int8 runs in torch"
        if why is None:
            from m3search.encoder import ort_backbone

            if onnx is None and not ort_backbone.available():
                return "torch"
            try:
                backbone.enable_onnx()
                return "onnxruntime"
            except ImportError as e:
                why = str(e)
        if onnx:
            raise ConfigError(f"onnx=True, but ONNX Runtime can't run this encoder: {why}")
        return "torch"

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None, **options
    ) -> "M3Encoder":
        """Load a BGE-M3-layout folder (see `checkpoint.py`) and wrap it; options as in the class docstring."""
        return cls(load_m3_model(path, device=device, dtype=dtype, native=True), **options)

    # -- Encoder interface --------------------------------------------------------------------------

    @property
    def heads_trained(self) -> bool:
        return self.spec.heads_trained

    @property
    def identity(self) -> EncoderIdentity:
        if self._identity is None:
            self._identity = EncoderIdentity(
                name=self.spec.name,
                dense_dim=self.model.hidden_size,
                multivec_dim=self.model.colbert_dim,
                vocab_size=self.vocab_size,
                tokenizer_hash=self.tokenizer.sha256,
                heads_hash=self.model.heads_hash(),
                sparse_terms=self.terms.scheme,
                sparse_width=self.terms.width,
            )
        return self._identity

    @property
    def vocab_size(self) -> int:
        """Width of the sparse vectors: the backbone's embedding rows (FlagEmbedding's sparse embedding size)."""
        return int(self.model.backbone.config.vocab_size)

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return self.tokenizer.token_strings(token_ids)

    def encode(
        self, texts: Sequence[str] | str, kind: Kind = "passage", max_length: int | None = None
    ) -> EncodedBatch:
        """Encode texts; one row per text in the caller's order.

        max_length truncates each text to that many tokens (special tokens included), as FlagEmbedding's
        max_length does. Without it nothing is cut: texts longer than `window_tokens` are encoded in windows.
        """
        check_kind(kind)
        texts = validate_texts(texts)
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise InputError(f"max_length must be an int >= 2 (room for the special tokens), got {max_length!r}")
        prefix = self.spec.prefix(kind)
        content = self.tokenizer.content_ids([prefix + t for t in texts] if prefix else texts)
        if max_length is not None:
            content = [ids[: max_length - 2] for ids in content]
        check_token_counts([len(ids) + 2 for ids in content], self.max_doc_tokens)
        pieces = make_pieces(
            content, self.tokenizer.cls_id, self.tokenizer.eos_id, self.window_tokens, self.window_overlap, self.mcls_every
        )
        dense, weights, vectors = self._run(pieces)
        return self._merge(len(texts), pieces, dense, weights, vectors)

    # -- model passes -------------------------------------------------------------------------------

    def _run(self, pieces: list[Piece]) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
        """Per piece: dense row, (token ids, lexical weights) kept, token vectors."""
        n = len(pieces)
        dense = np.zeros((n, self.model.hidden_size), dtype=np.float32)
        weights: list = [None] * n
        vectors: list = [None] * n
        lengths = np.asarray([len(p) for p in pieces], dtype=np.int64)
        budget = self.batch_tokens
        pending = collections.deque(plan_batches(lengths, budget))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="encoding", unit="piece")
        try:
            while pending:
                idx = pending.popleft()
                try:
                    d, w, v = self._forward([pieces[i] for i in idx])
                except RuntimeError as e:
                    if not _is_out_of_memory(e):
                        raise
                    if len(idx) == 1:
                        raise ModelError(
                            f"out of memory encoding one piece of {lengths[idx[0]]} tokens (text at position "
                            f"{pieces[idx[0]].text}): pass a smaller window_tokens or max_length"
                        ) from e
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    budget = max(budget // 2, 1)
                    logger.warning("out of memory on %s; retrying with batch_tokens=%d", self.device, budget)
                    rest = np.concatenate([idx, *pending])
                    pending = collections.deque(rest[b] for b in plan_batches(lengths[rest], budget))
                    continue
                dense[idx] = d
                for j, i in enumerate(idx):
                    weights[i], vectors[i] = w[j], v[j]
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return dense, weights, vectors

    def _forward(self, batch: list[Piece]) -> tuple[np.ndarray, list, list]:
        input_ids, mask = self.tokenizer.pad([p.ids for p in batch])
        ids_t = torch.from_numpy(input_ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        small = self.device.type == "cpu" and input_ids.size <= SINGLE_THREAD_TOKENS
        with torch.inference_mode(), _torch_threads(1 if small else None):
            onnx = {"onnx": not small} if self.runtime == "onnxruntime" else {}
            hidden = self.model.backbone(input_ids=ids_t, attention_mask=mask_t, **onnx).last_hidden_state
            out = self.model.apply_heads(hidden, mask_t)
            dense = out.dense
            if self.mcls_every:
                dense = self._mcls_dense(hidden, batch)
            dense = dense.float().cpu().numpy()
            token_weights = out.token_weights.float().cpu().numpy()
            colbert = out.colbert.float().cpu().numpy()
        weights, vectors = [], []
        for j, piece in enumerate(batch):
            n = len(piece)
            weights.append((np.asarray(piece.ids), token_weights[j, :n]))  # every position; merge_pieces filters
            vecs = colbert[j, : n - 1]
            if piece.cls_positions is not None and len(piece.cls_positions) > 1:
                # MCLS: the inserted CLS tokens (all but the leading one) are not text tokens
                vecs = np.delete(vecs, piece.cls_positions[1:] - 1, axis=0)
            vectors.append(vecs)
        return dense, weights, vectors

    def _mcls_dense(self, hidden: torch.Tensor, batch: list[Piece]) -> torch.Tensor:
        """Mean of the final states at each piece's CLS positions, L2-normalised."""
        pool = torch.zeros(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
        for j, piece in enumerate(batch):
            positions = torch.as_tensor(piece.cls_positions, device=hidden.device)
            pool[j, positions] = 1.0 / len(piece.cls_positions)
        return F.normalize(torch.einsum("bl,blh->bh", pool, hidden), dim=-1)

    # -- merging pieces into texts --------------------------------------------------------------------

    def _merge(
        self, n_texts: int, pieces: list[Piece], dense: np.ndarray, weights: list, vectors: list
    ) -> EncodedBatch:
        unused = np.fromiter(self.tokenizer.unused_ids, dtype=np.int64)
        return EncodedBatch(*merge_pieces(n_texts, pieces, dense, weights, vectors, self.long_dense, self.vocab_size,
                                          self.model.colbert_dim, unused, self.terms))


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with n intra-op torch threads (None: leave them), restoring the count after."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
