"""Tokenizers: DNA bytes <-> token ids through a 256-entry lookup table (and reverse complement), and
time-series values -> bin ids (`ValueQuantiser`, at the end of this file).

One token per base, no k-mers: the model is character-level. Encoding runs one table lookup per byte in C
(`bytes.translate` over the table built below), never a Python loop per character, so a whole chromosome
encodes in well under a second (benchmarks/tokenizer_throughput.py).

Glossary
  id          small integer for one base: PAD=0, A=1, C=2, G=3, T=4, N=5 (VOCAB_SIZE = 6; models round their
              embedding up to 8 rows for alignment, the extra rows are never produced here).
  PAD         filler for batches of unequal lengths; never produced by `encode`, dropped by `decode`.
  N           unknown base: 'N' itself and the IUPAC ambiguity codes R Y K M S W B D H V. Pipelines leave it
              out of the LM loss (mask positions equal to N_ID).
  soft-masked lower-case bases (repeats in UCSC/Ensembl genomes); encoded like upper case.
  RC          reverse complement: the other strand read 5'->3'. A<->T, C<->G, N and PAD stay, then the order flips.
  B, L        batch size and sequence length of an id array of shape (B, L).
"""
import numpy as np
import torch

PAD_ID, A_ID, C_ID, G_ID, T_ID, N_ID = range(6)
VOCAB_SIZE = 6

_INVALID = 255  # table entry for bytes that are not DNA; no id is that large


def _build_encode_table() -> np.ndarray:
    table = np.full(256, _INVALID, dtype=np.uint8)
    for letters, token_id in (("A", A_ID), ("C", C_ID), ("G", G_ID), ("T", T_ID), ("NRYKMSWBDHV", N_ID)):
        for letter in letters:
            table[ord(letter)] = table[ord(letter.lower())] = token_id
    return table


ENCODE_TABLE = _build_encode_table()  # (256,) uint8: byte value -> id, 255 for anything that is not DNA
_ENCODE_BYTES = ENCODE_TABLE.tobytes()
_DECODE_BYTES = b"\0ACGTN".ljust(256, b"\0")  # id -> letter; ids are range-checked before use
_CHUNK = 1 << 18  # bytes encoded per step: fits in L2, so the lookup never waits on main memory


class TokenizerError(ValueError):
    """A sequence holds a character that is not DNA (the message names it and its position)."""


SequenceLike = str | bytes | bytearray | memoryview | np.ndarray


def encode(seq: SequenceLike, *, name: str | None = None) -> np.ndarray:
    """Token ids (uint8, writable) for a DNA sequence; an array input keeps its shape.

    Upper and lower case give the same ids, IUPAC ambiguity codes give N_ID. Anything else (whitespace,
    digits, '-', 'U', ...) raises TokenizerError naming the character, its 0-based position and `name`.
    """
    shape = None
    if isinstance(seq, str):
        try:
            data = seq.encode("ascii")
        except UnicodeEncodeError as error:
            encode(seq[: error.start], name=name)  # an earlier invalid ASCII character is reported first
            raise _invalid_character(repr(seq[error.start]), error.start, name) from None
    elif isinstance(seq, (bytes, bytearray, memoryview)):
        data = seq
    elif isinstance(seq, np.ndarray):
        if seq.dtype != np.uint8:
            raise TypeError(f"encode expects a uint8 array of ASCII codes, got dtype {seq.dtype}")
        data, shape = np.ascontiguousarray(seq), seq.shape
    else:
        raise TypeError(f"encode expects str, bytes, bytearray, memoryview or a uint8 array, got {type(seq).__name__}")

    source = memoryview(data).cast("B")  # flat view of the bytes, no copy
    ids = np.empty(len(source), dtype=np.uint8)
    target = memoryview(ids)
    # Cache-sized pieces go straight from the source to `ids`: one pass over memory instead of three.
    for start in range(0, len(source), _CHUNK):
        piece = source[start : start + _CHUNK].tobytes().translate(_ENCODE_BYTES)
        invalid = piece.find(_INVALID)  # memchr-fast; -1 when every byte is DNA
        if invalid >= 0:
            position = start + invalid
            where = position
            if shape is not None and len(shape) > 1:
                where = tuple(int(i) for i in np.unravel_index(position, shape))
            # repr(b'-')[1:] -> "'-'", repr(b'\xff')[1:] -> "'\\xff'"
            raise _invalid_character(repr(source[position : position + 1].tobytes())[1:], where, name)
        target[start : start + len(piece)] = piece
    return ids if shape is None else ids.reshape(shape)


def _invalid_character(char_repr: str, position: int | tuple[int, ...], name: str | None) -> TokenizerError:
    where = f" in record {name!r}" if name is not None else ""
    return TokenizerError(
        f"invalid DNA character {char_repr} at position {position}{where}; "
        "expected A, C, G, T, N or an IUPAC code (R Y K M S W B D H V), in either case"
    )


def decode(ids: np.ndarray | torch.Tensor) -> str:
    """The upper-case letters of a 1-D id sequence; PAD ids are dropped, N comes back as 'N'."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"decode expects a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):  # min/max are single fast passes
        position = int(np.flatnonzero((ids < 0) | (ids >= VOCAB_SIZE))[0])
        raise TokenizerError(f"id {int(ids[position])} at position {position} is not a DNA token (0..{VOCAB_SIZE - 1})")
    return ids.astype(np.uint8, copy=False).tobytes().translate(_DECODE_BYTES, bytes([PAD_ID])).decode("ascii")


def reverse_complement(
    ids: np.ndarray | torch.Tensor, lengths: np.ndarray | torch.Tensor | list[int] | None = None
) -> np.ndarray | torch.Tensor:
    """Reverse complement of ids along the last axis, for numpy arrays and torch tensors alike.

    ids: (..., L) integer ids. Complement maps A<->T and C<->G, leaves N, PAD (and any other id) unchanged.
    lengths: optional (...,) valid length of each row of a right-padded batch: each row's first `lengths`
    ids are reverse-complemented where they stand and the padding stays at the end. Without it the whole
    row flips, so right padding ends up at the front. Either way rc(rc(x)) == x.
    Returns a new array/tensor of the same type, dtype and shape (and device); the input is not modified.
    """
    is_tensor = isinstance(ids, torch.Tensor)
    xp = torch if is_tensor else np
    if not is_tensor:
        ids = np.asarray(ids)

    def complement(x):  # A=1..T=4 are laid out so that the complement of x is A_ID + T_ID - x
        return xp.where((x >= A_ID) & (x <= T_ID), (A_ID + T_ID) - x, x)

    if lengths is None:
        return complement(ids.flip(-1) if is_tensor else ids[..., ::-1])

    length = ids.shape[-1]
    lengths = torch.as_tensor(lengths, device=ids.device) if is_tensor else np.asarray(lengths)
    if lengths.shape != ids.shape[:-1]:
        raise ValueError(f"lengths has shape {tuple(lengths.shape)}, expected {tuple(ids.shape[:-1])} (one per row)")
    if bool(((lengths < 0) | (lengths > length)).any()):
        raise ValueError(f"lengths must lie in 0..{length} (the padded length)")
    # Output position j reads input position lengths-1-j inside the valid prefix and j in the padding.
    positions = torch.arange(length, device=ids.device) if is_tensor else np.arange(length)
    valid = lengths[..., None]
    source = xp.where(positions < valid, valid - 1 - positions, positions)  # (..., L)
    if is_tensor:
        return complement(torch.gather(ids, -1, source.long()))
    return complement(np.take_along_axis(ids, source, axis=-1))


# ---- time-series values as characters ---------------------------------------------------------------------

class ValueQuantiser:
    """Real values -> bin ids, one scale per channel, fitted on training data only.

    Robust scaling first: (x - median) / IQR (falling back to the standard deviation, then to 1 for a constant
    channel: no division by zero, every training value lands in one bin). Then `n_bins` uniform bins between
    the 0.1st and 99.9th percentiles of the scaled training values, widened by `margin` of that span on each
    side (a span of 2 for a constant channel), so one training spike does not squeeze the rest into few bins.

    Ids: MISSING=0 (NaN), BELOW=1 and ABOVE=n_bins+2 for values outside the range (flagged as out of range),
    2..n_bins+1 for the bins. vocab_size = n_bins + 3.
    """

    MISSING, BELOW = 0, 1

    def __init__(self, center, scale, low, high, n_bins: int):
        self.center, self.scale = np.asarray(center, np.float64), np.asarray(scale, np.float64)
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.n_bins = int(n_bins)

    @property
    def above(self) -> int:
        return self.n_bins + 2

    @property
    def vocab_size(self) -> int:
        return self.n_bins + 3

    @property
    def n_channels(self) -> int:
        return self.center.size

    @classmethod
    def fit(cls, values: np.ndarray, n_bins: int = 64, margin: float = 0.1) -> "ValueQuantiser":
        """values (T, C) with NaN where missing; every channel needs at least one value."""
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        q25, center, q75 = np.nanpercentile(values, [25, 50, 75], axis=0)  # (C,) each
        scale = q75 - q25
        std = np.nanstd(values, axis=0)
        scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
        scaled = (values - center) / scale
        low, high = np.nanpercentile(scaled, [0.1, 99.9], axis=0)
        span = high - low
        pad = np.where(span > 0, margin * span, 1.0)
        return cls(center, scale, low - pad, high + pad, n_bins)

    def scale_values(self, values: np.ndarray) -> np.ndarray:
        """(T, C) -> robust-scaled (T, C), NaN kept."""
        return (values - self.center) / self.scale

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """values (T, C) -> (ids (T, C) int64, out_of_range (T, C) bool)."""
        scaled = self.scale_values(values)
        missing = np.isnan(scaled)
        position = (scaled - self.low) / (self.high - self.low) * self.n_bins  # (T, C), bins at [0, n_bins)
        below, above = position < 0, position >= self.n_bins
        ids = 2 + np.floor(np.clip(np.nan_to_num(position), 0, self.n_bins - 1)).astype(np.int64)
        ids[below] = self.BELOW
        ids[above] = self.above
        ids[missing] = self.MISSING
        return ids, (below | above)

    def excess(self, values: np.ndarray) -> np.ndarray:
        """values (T, C) -> how far each value lies outside the bin range, in bin widths (0 inside or missing).

        BELOW and ABOVE say only that a value left the range; this says by how much."""
        position = (self.scale_values(values) - self.low) / (self.high - self.low) * self.n_bins
        return np.nan_to_num(np.maximum(-position, 0) + np.maximum(position - self.n_bins, 0))

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "scale": self.scale.tolist(), "low": self.low.tolist(),
                "high": self.high.tolist(), "n_bins": self.n_bins}

    @classmethod
    def from_dict(cls, data: dict) -> "ValueQuantiser":
        try:
            q = cls(data["center"], data["scale"], data["low"], data["high"], data["n_bins"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"invalid quantiser settings: {err}") from None
        if not (q.center.shape == q.scale.shape == q.low.shape == q.high.shape == (q.n_channels,)) \
                or q.n_bins < 2 or not np.all(q.high > q.low) or not np.all(q.scale > 0):
            raise ValueError("invalid quantiser settings: inconsistent shapes or ranges")
        return q
