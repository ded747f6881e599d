"""SentencePiece (``tokenizer.model``) → ``llama`` vocab: Llama 2, Mistral v0.1, Gemma, Phi-3.

**Reading ``tokenizer.model``.** The file is a protobuf ``ModelProto``. The ``sentencepiece``
package can read it, and ships the protobuf descriptor, but the descriptor needs the ``protobuf``
runtime and the package a native library: two dependencies for five fields. We read the protobuf
wire format directly instead (:func:`read_model_proto`, about forty lines): the pieces with their
scores and types, the trainer's model type, and the normalizer's flags. The tests check this reader
against ``sentencepiece``'s own descriptor.

**What llama.cpp needs** (``tokenizer.ggml.model = "llama"``, its SentencePiece-BPE tokenizer):

- every piece with its score and type; SentencePiece's piece types are GGUF's token types, same
  numbers (normal, unknown, control, user-defined, unused, byte);
- user-defined pieces and non-special added tokens with ``▁`` turned back into spaces: llama.cpp
  matches them in the raw text, before it escapes spaces;
- added tokens from ``tokenizer.json`` and ``tokenizer_config.json`` (``added_tokens_decoder``),
  special ones as control tokens, at a score of -1000 (never merged into);
- ``tokenizer.ggml.add_space_prefix``: whether a ``▁`` is prepended to the text. llama.cpp assumes
  yes for SentencePiece; Gemma says no. The HF tokenizer's own pipeline (``tokenizer.json``) decides
  when present, else the model's ``add_dummy_prefix``;
- ids past the tokenizer, up to the model's ``vocab_size``, as unused ``[PADn]`` tokens.

Known difference that no metadata can fix: with a space prefix, llama.cpp also prefixes the text
that follows every special token, where SentencePiece and transformers 5's tokenizers do not.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from ggufpack.convert.files import read_bounded, read_json
from ggufpack.convert.vocab.common import MAX_VOCAB, Vocab, check_token_id, special_vocab
from ggufpack.errors import GGUFPackError, clipped, shown

#: SentencePiece TrainerSpec.ModelType values
SPM_UNIGRAM, SPM_BPE = 1, 2
#: score of tokens that are not merge candidates (added tokens, padding), as llama.cpp's converter uses
ADDED_SCORE = -1000.0
#: SentencePiece's piece types (normal, unknown, control, user-defined, unused, byte), gguf.TokenType's numbers
_PIECE_TYPES = frozenset(range(1, 7))


@dataclass(frozen=True)
class SentencePieceModel:
    """The parts of ``ModelProto`` a GGUF vocab needs."""

    pieces: list[str]
    scores: list[float]
    types: list[int]  # SentencePiece piece types == gguf.TokenType values
    model_type: int  # TrainerSpec.model_type (1 unigram, 2 BPE, ...)
    add_dummy_prefix: bool  # NormalizerSpec.add_dummy_prefix


@dataclass(frozen=True)
class SentencePieceVocab(Vocab):
    """A :class:`Vocab` that also says whether llama.cpp prepends a space to the text."""

    add_space_prefix: bool = True

    def write(self, writer: gguf.GGUFWriter) -> None:
        super().write(writer)
        writer.add_add_space_prefix(self.add_space_prefix)


def load_sentencepiece_vocab(model_dir: Path, vocab_size: int | None, warnings: list[str]) -> Vocab:
    """Read ``tokenizer.model`` and the HF tokenizer files in ``model_dir``; pad to ``vocab_size``."""
    path = model_dir / "tokenizer.model"
    try:
        spm = read_model_proto(read_bounded(path))
    except (ValueError, IndexError, struct.error) as e:
        detail = "a piece is not UTF-8" if isinstance(e, UnicodeDecodeError) else clipped(str(e))
        raise GGUFPackError(f"{path} is not a SentencePiece model: {detail}") from e
    if not spm.pieces:
        raise GGUFPackError(f"{path}: no pieces: not a SentencePiece model")
    if spm.model_type != SPM_BPE:
        warnings.append(
            f"{path.name} is a SentencePiece model of type {spm.model_type} (not BPE): llama.cpp tokenizes it with "
            "the BPE merge algorithm, so token ids may differ from the Hugging Face tokenizer's"
        )
    tokens = [_unescape(p) if t == gguf.TokenType.USER_DEFINED else p for p, t in zip(spm.pieces, spm.types,
                                                                                      strict=True)]
    scores, types = list(spm.scores), list(spm.types)
    added = _added_tokens(model_dir)
    # ids pad the lists up to them: bound them first by the vocab_size, else by what the files hold
    bound = vocab_size if vocab_size is not None else len(tokens) + len(added)
    for idx, text, special in added:
        check_token_id(idx, bound, path.parent, f"added token {shown(text)}")
        while idx >= len(tokens):
            _pad(tokens, scores, types)
        if idx < len(spm.pieces) and spm.pieces[idx] == text and types[idx] != gguf.TokenType.NORMAL:
            continue  # the model's own special piece (<unk> stays unknown, <bos> control...)
        tokens[idx] = text if special else _unescape(text)
        scores[idx] = ADDED_SCORE
        types[idx] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    size = vocab_size if vocab_size is not None else len(tokens)
    if len(tokens) > size:
        raise GGUFPackError(f"{path}: {len(tokens)} tokens, more than the model's vocab_size {size}")
    while len(tokens) < size:
        _pad(tokens, scores, types)
    return SentencePieceVocab(
        model="llama", pre="default", tokens=tokens, token_types=[int(t) for t in types],
        special=special_vocab(model_dir, len(tokens)), scores=scores,
        add_space_prefix=_add_space_prefix(model_dir, spm),
    )


def _pad(tokens: list[str], scores: list[float], types: list[int]) -> None:
    tokens.append(f"[PAD{len(tokens)}]")
    scores.append(ADDED_SCORE)
    types.append(gguf.TokenType.UNUSED)


def _unescape(text: str) -> str:
    """``▁`` → space, for tokens llama.cpp matches in raw text."""
    return text.replace("\u2581", " ")


def _added_tokens(model_dir: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) of the HF added tokens, by id: ``tokenizer.json``, then ``added_tokens_decoder``."""
    found: dict[int, tuple[str, bool]] = {}
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        for added in read_json(tokenizer_json).get("added_tokens", []):
            found[int(added["id"])] = (added["content"], bool(added.get("special")))
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        for idx, added in (read_json(config).get("added_tokens_decoder") or {}).items():
            found[int(idx)] = (added["content"], bool(added.get("special")))
    for idx, (text, _) in found.items():
        if not isinstance(text, str):
            raise GGUFPackError(f"{model_dir}: added token {idx} has content {shown(text)}, not a string")
    return [(idx, *found[idx]) for idx in sorted(found)]


def _add_space_prefix(model_dir: Path, spm: SentencePieceModel) -> bool:
    """Whether the HF tokenizer prepends ``▁``: its ``tokenizer.json`` pipeline, else ``add_dummy_prefix``."""
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        found = _prepends_space(read_json(tokenizer_json))
        if found is not None:
            return found
    return spm.add_dummy_prefix


def _prepends_space(tokenizer: dict[str, Any]) -> bool | None:
    """True/False where the normalizer or pre-tokenizer says so (Metaspace, Prepend), None when silent."""
    steps: list[dict[str, Any]] = []
    for part in (tokenizer.get("normalizer"), tokenizer.get("pre_tokenizer")):
        if isinstance(part, dict):
            steps += part.get("normalizers") or part.get("pretokenizers") or [part]
    for step in steps:
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
        if step.get("type") == "Metaspace":
            scheme = step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never")
            return scheme != "never"
    if any(step.get("type") == "Replace" for step in steps):
        return False  # Gemma: spaces replaced by ▁, nothing prepended
    return None


# --- the protobuf wire format, as much as ModelProto needs ----------------------------------------


def read_model_proto(data: bytes) -> SentencePieceModel:
    """Parse a serialized SentencePiece ``ModelProto``; ValueError on malformed input."""
    pieces: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    model_type, add_dummy_prefix = SPM_UNIGRAM, True  # the proto's defaults
    for field, value in _fields(data):
        if field == 1 and isinstance(value, bytes):  # repeated SentencePiece pieces
            piece, score, kind = "", 0.0, gguf.TokenType.NORMAL
            for sub, sub_value in _fields(value):
                if sub == 1 and isinstance(sub_value, bytes):
                    piece = sub_value.decode("utf-8")
                elif sub == 2 and isinstance(sub_value, float):
                    score = sub_value
                elif sub == 3 and isinstance(sub_value, int):
                    kind = sub_value
            if kind not in _PIECE_TYPES:
                raise ValueError(f"piece {len(pieces)} has type {kind}, which SentencePiece does not define")
            if len(pieces) == MAX_VOCAB:
                raise ValueError(f"more than {MAX_VOCAB} pieces")
            pieces.append(piece)
            scores.append(score)
            types.append(int(kind))
        elif field == 2 and isinstance(value, bytes):  # TrainerSpec
            model_type = next((v for f, v in _fields(value) if f == 3 and isinstance(v, int)), model_type)
        elif field == 3 and isinstance(value, bytes):  # NormalizerSpec
            add_dummy_prefix = bool(next((v for f, v in _fields(value) if f == 3 and isinstance(v, int)),
                                         add_dummy_prefix))
    return SentencePieceModel(pieces, scores, types, model_type, add_dummy_prefix)


def _fields(data: bytes) -> Iterator[tuple[int, int | float | bytes]]:
    """(field number, value) pairs of one message: varints as int, fixed32 as float, length-delimited as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield field, value
        elif wire == 1:
            pos += 8  # fixed64: no field we read
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            yield field, data[pos : pos + length]
            pos += length
        elif wire == 5:
            yield field, struct.unpack_from("<f", data, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
