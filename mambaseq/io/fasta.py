"""FASTA access: `open_fasta(path) -> Genome`, random access to any slice of any record through pyfaidx.

Reads plain FASTA (.fa/.fasta/.fna) and bgzip-compressed FASTA (.fa.gz/.fa.bgz, read by pyfaidx through
Biopython's BGZF reader). Indexes are found or built on open: next to the FASTA when that folder is writable,
otherwise in a per-user cache folder, so read-only reference folders (CI, shared clusters) just work.
A Genome stores paths only and opens its file handle lazily in each process, so a torch DataLoader worker
(fork or spawn) gets its own handle instead of sharing a file offset with its parent.

`stream_fasta(path)` reads records front to back instead, with no index and in bounded memory: plain, bgzip or
plain-gzip files, any line layout (CRLF, blank lines, unequal or very long lines), each record's bases handed
out in pieces of at most one read block, so a 250-Mbase chromosome never sits in memory. Batch prediction uses
it; training and scanning need random access and use `open_fasta`.

Glossary
  record     one '>' entry of the FASTA (a chromosome, contig or scaffold); its name is the header's first word.
  .fai       samtools FASTA index: per record its length, byte offset, bases per line and bytes per line.
  BGZF       blocked gzip (what `bgzip` writes): independent gzip blocks of up to 64 KiB, so readers can seek.
  .gzi       BGZF block index (compressed -> uncompressed block offsets); needed to seek in a .fa.gz.
  stale      an index older than its FASTA, or one whose offsets do not land on the FASTA's headers and record ends.
  soft-mask  lower-case bases (repeats); `fetch` returns them unchanged, the tokenizer upper-cases them.
  interval   0-based half-open (start, end), as in BED files and Python slices.
"""
import bisect
import gzip
import hashlib
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyfaidx

_HEAD_BYTES = 1 << 16  # how much of the file the quick format check reads, and the header search window
_SAMPLED_RECORDS = 32  # records whose header and end the staleness check reads (plus the last one)
_OTHER_COMPRESSIONS = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
_MAIN_CHROMOSOME = re.compile(r"(?:chr)?([1-9]|1[0-9]|2[0-2]|X|Y)")


class FastaError(ValueError):
    """A FASTA file or its index cannot be used; the one-line message names the file."""


class Genome:
    """Random access to the records of one indexed FASTA file (build it with `open_fasta`).

    names: record names in file order. lengths: record name -> number of bases.
    fetch(name, start, end) returns the raw bases of [start, end) as ASCII bytes (soft-masking kept).
    close() releases this process's file handle (a later fetch opens a new one); also a context manager.
    """

    def __init__(self, path: Path, index_path: Path, gzi_path: Path | None):
        self.path, self.index_path, self.gzi_path = path, index_path, gzi_path
        self._handle: pyfaidx.Faidx | None = None
        self._handle_pid: int | None = None
        records = self._faidx().index
        self.names: list[str] = list(records)
        self.lengths: dict[str, int] = {name: record.rlen for name, record in records.items()}
        empty = [name for name, length in self.lengths.items() if length == 0]
        if empty:
            self.close()
            raise FastaError(f"{path}: record {empty[0]!r} has no sequence (a '>' header followed by no bases)")

    def fetch(self, name: str, start: int, end: int) -> bytes:
        """Bases [start, end) of record `name` (0-based, half-open), e.g. fetch('chr2', 0, 10) -> b'NNNNNNNNNN'."""
        length = self.lengths.get(name)
        if length is None:
            raise FastaError(f"{self.path}: no record named {name!r} (records: {_preview(self.names)})")
        if not 0 <= start <= end <= length:
            raise FastaError(f"{self.path}: interval {name}:{start}-{end} does not lie within {name}:0-{length}")
        if start == end:
            return b""
        try:
            bases = self._faidx().fetch(name, start + 1, end)  # pyfaidx counts 1-based, end inclusive
        except UnicodeDecodeError:
            raise FastaError(f"{self.path}: non-ASCII byte in {name}:{start}-{end}; FASTA is ASCII text") from None
        return bases.encode("ascii")

    def close(self) -> None:
        if self._handle is not None and self._handle_pid == os.getpid():
            self._handle.close()
        self._handle = self._handle_pid = None

    def __enter__(self) -> "Genome":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Genome({str(self.path)!r}, {len(self.names)} records)"

    # Spawned DataLoader workers receive a copy of the dataset: send paths, never an open file handle.
    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in ("_handle", "_handle_pid")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _handle=None, _handle_pid=None)

    def _faidx(self) -> pyfaidx.Faidx:
        # A forked worker inherits its parent's handle, whose file offset is shared: open a fresh one.
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = _open_faidx(self.path, self.index_path, self.gzi_path)
            self._handle_pid = os.getpid()
        return self._handle


def open_fasta(path: str | os.PathLike, *, index_dir: str | os.PathLike | None = None) -> Genome:
    """Open a plain or bgzip FASTA, reusing its index when current and building one when not.

    The index (.fai, plus .gzi for bgzip) is looked for next to the FASTA, then in `index_dir` (default
    $XDG_CACHE_HOME/mambaseq/fai or ~/.cache/mambaseq/fai, one file per absolute FASTA path). A missing or
    stale one is rebuilt next to the FASTA when that folder is writable, else in `index_dir`.
    Raises FastaError (one line, naming the file) for anything that is not a usable FASTA.
    """
    path = Path(path).absolute()  # workers reopen it later, perhaps from another working directory
    bgzf = _check_format(path)
    cache = Path(index_dir) if index_dir is not None else _default_index_dir()
    beside = _index_paths(path.parent, path.name, bgzf)
    cached = _index_paths(cache, f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}-{path.name}", bgzf)

    problems = []
    for index_path, gzi_path in (beside, cached):
        problem = _index_problem(path, index_path, gzi_path, bgzf)
        if problem is None:
            return Genome(path, index_path, gzi_path)
        problems.append(problem)

    targets = ([beside] if _folder_accepts_writes(path.parent) else []) + [cached]
    for index_path, gzi_path in targets:
        if _can_create_file_in(index_path.parent):
            _build_index(path, index_path, gzi_path)
            return Genome(path, index_path, gzi_path)
    reason = next((problem for problem in problems if problem != "missing"), "no index exists")
    raise FastaError(
        f"{path}: cannot use its index ({reason}) and cannot write a new one next to it or in {cache}; "
        "pass index_dir= a writable folder"
    )


def main_chromosomes(names) -> list[str]:
    """The names among `names` that are chromosomes 1-22, X or Y (with or without 'chr'), in natural order."""
    ranks = {str(number): number for number in range(1, 23)} | {"X": 23, "Y": 24}
    chosen = [(ranks[match[1]], name) for name in names if (match := _MAIN_CHROMOSOME.fullmatch(name))]
    return [name for _, name in sorted(chosen)]


def _first_bytes(path: Path, n: int) -> bytes:
    """The first n bytes (magic numbers), with one clear error for a missing, folder or unreadable path."""
    try:
        with open(path, "rb") as file:
            return file.read(n)
    except FileNotFoundError:
        raise FastaError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FastaError(f"{path}: is a folder, not a FASTA file") from None
    except OSError as error:
        raise FastaError(f"{path}: cannot read it ({error.strerror})") from None


def _check_format(path: Path) -> bool:
    """Cheap checks on the first 64 KiB; returns whether the file is BGZF. Raises FastaError."""
    magic = _first_bytes(path, 18)

    for prefix, compression in _OTHER_COMPRESSIONS.items():
        if magic.startswith(prefix):
            raise FastaError(f"{path}: is {compression}-compressed; decompress it, then use it as is or `bgzip` it")

    named_compressed = path.name.lower().endswith((".gz", ".bgz"))  # pyfaidx picks its reader by file name
    is_gzip = magic.startswith(b"\x1f\x8b")
    # BGZF = gzip with an extra field 'BC' in every block header (SAM/BAM spec, section 4.1).
    bgzf = is_gzip and len(magic) >= 14 and magic[3] & 4 == 4 and magic[12:14] == b"BC"
    if is_gzip and not bgzf:
        raise FastaError(
            f"{path}: is plain gzip, which cannot be read at random positions; recompress it with bgzip: "
            f"`zcat {path} | bgzip > {_without_gz(path)}.bgz` (or `gunzip {path}` to keep it uncompressed)"
        )
    if bgzf and not named_compressed:
        raise FastaError(f"{path}: is bgzip-compressed but not named .gz or .bgz; rename it to {path.name}.gz")
    if not is_gzip and named_compressed:
        raise FastaError(
            f"{path}: is named {path.suffix} but is not gzip-compressed; rename it to {_without_gz(path).name}"
        )

    opener = gzip.open if bgzf else open  # BGZF is valid gzip: the first block decompresses with the stdlib
    try:
        with opener(path, "rb") as file:
            head = file.read(_HEAD_BYTES)
    except (OSError, EOFError) as error:
        raise FastaError(f"{path}: cannot decompress its start ({error})") from None
    text = head.lstrip()
    if not text and len(head) < _HEAD_BYTES:
        raise FastaError(f"{path}: is empty (no '>' record)")
    if not text.startswith(b">"):
        first_line = text.split(b"\n", 1)[0][:40]
        raise FastaError(f"{path}: not a FASTA file: its first non-empty line starts with {first_line!r}, not '>'")
    return bool(bgzf)


def _without_gz(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() in (".gz", ".bgz") else path


def _default_index_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mambaseq" / "fai"


def _index_paths(folder: Path, stem: str, bgzf: bool) -> tuple[Path, Path | None]:
    """Where an index lives in `folder`: `<stem>.fai`, and for BGZF also `<stem>.gzi`."""
    return folder / f"{stem}.fai", folder / f"{stem}.gzi" if bgzf else None


def _index_problem(path: Path, index_path: Path, gzi_path: Path | None, bgzf: bool) -> str | None:
    """None when the index can be used as it is, else why not ('missing', 'older than the FASTA', ...)."""
    index_files = [index_path] + ([gzi_path] if gzi_path else [])
    if not all(file.is_file() for file in index_files):
        return "missing"
    fasta_mtime = path.stat().st_mtime_ns
    if any(file.stat().st_mtime_ns < fasta_mtime for file in index_files):
        return f"{index_path} is older than the FASTA"
    try:
        handle = _open_faidx(path, index_path, gzi_path)
    except FastaError as error:
        return f"{index_path} is unreadable: {error}"
    try:
        if not _index_matches_file(handle, bgzf):
            return f"{index_path} does not match the FASTA's headers and record ends"
    finally:
        handle.close()
    return None


def _index_matches_file(handle: pyfaidx.Faidx, bgzf: bool) -> bool:
    """Spot-check a sample of records: the bytes before each offset are its header line, and its last base
    is followed by a line end (for the last record: only whitespace up to the end of the file)."""
    records = list(handle.index.items())
    if not records:
        return False
    block_starts = [block.ustart for block in handle.gzi_index] if bgzf else None

    def read(offset: int, size: int) -> bytes:
        if bgzf:  # seek through the .gzi: a BGZF virtual offset is (block start in file, offset in block)
            block = handle.gzi_index[bisect.bisect_right(block_starts, offset) - 1]
            handle.file.seek(pyfaidx.make_virtual_offset(block.cstart, offset - block.ustart))
        else:
            handle.file.seek(offset)
        return handle.file.read(size)

    sample = records[:: max(1, len(records) // _SAMPLED_RECORDS)] + [records[-1]]
    try:
        for name, record in sample:
            window_start = max(0, record.offset - _HEAD_BYTES)
            window = read(window_start, record.offset - window_start)
            line_start = window.rfind(b"\n", 0, len(window) - 1) + 1
            if line_start == 0 and window_start > 0:
                continue  # header longer than the window: cannot tell, trust it
            header = window[line_start:]
            if not header.endswith(b"\n") or header[:1] != b">" or header[1:].split()[:1] != [name.encode()]:
                return False
            if record.rlen == 0:
                continue
            line_end_bytes = record.lenb - record.lenc
            last_base = record.offset + record.rlen - 1 + (record.rlen - 1) // record.lenc * line_end_bytes
            is_last = record is records[-1][1]
            after = read(last_base, _HEAD_BYTES if is_last else 2)
            if after[:1].isspace() or after[:1] in (b"", b">"):
                return False
            if after[1:2] not in (b"", b"\n", b"\r") or (is_last and after[1:].strip()):
                return False
    except (OSError, ValueError, EOFError):  # offsets beyond the file or into a broken BGZF block
        return False
    return True


def _folder_accepts_writes(folder: Path) -> bool:
    # root passes access() everywhere; a folder with every write bit removed is still meant as read-only.
    if not os.access(folder, os.W_OK):
        return False
    return os.geteuid() != 0 or bool(folder.stat().st_mode & 0o222)


def _can_create_file_in(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _build_index(path: Path, index_path: Path, gzi_path: Path | None) -> None:
    """Index `path` into temporary files and move them into place, so concurrent openers never see half an index."""
    suffix = f".{os.getpid()}.tmp"
    temporary_index = index_path.with_name(index_path.name + suffix)
    temporary_gzi = gzi_path.with_name(gzi_path.name + suffix) if gzi_path else None
    try:
        _open_faidx(path, temporary_index, temporary_gzi, build=True).close()
        if gzi_path:
            os.replace(temporary_gzi, gzi_path)
        os.replace(temporary_index, index_path)
    finally:
        for temporary in (temporary_index, temporary_gzi):
            if temporary:
                temporary.unlink(missing_ok=True)


def _open_faidx(path: Path, index_path: Path, gzi_path: Path | None, *, build: bool = False) -> pyfaidx.Faidx:
    """pyfaidx handle on `path`; without `build` it never writes (rebuild=False, build_index=False)."""
    try:
        return pyfaidx.Faidx(
            str(path), indexname=str(index_path), gzi_indexname=str(gzi_path) if gzi_path else None,
            as_raw=True, strict_bounds=True, rebuild=build, build_index=build,
        )
    except pyfaidx.FastaIndexingError as error:
        raise FastaError(f"{path}: {_explain_indexing_error(str(error))}") from None
    except UnicodeDecodeError:
        raise FastaError(f"{path}: holds a non-ASCII byte; FASTA is plain ASCII text") from None
    except ValueError as error:
        duplicate = re.fullmatch(r'Duplicate key "(.*)"', str(error))
        if duplicate:
            raise FastaError(
                f"{path}: duplicate record name {duplicate[1]!r} (a name is the first word of a '>' line)"
            ) from None
        raise FastaError(f"{path}: {error}") from None
    except OSError as error:
        raise FastaError(f"{path}: {error}") from None


def _explain_indexing_error(message: str) -> str:
    uneven = re.search(r"Inconsistent line found in >(.*) at line (\S+)\.", message)
    if uneven:
        record, line = uneven.groups()
        return (
            f"record {record!r} has lines of unequal length (first at line {line}); every line of a record but "
            "its last must hold the same number of bases, with no blank line inside a record and one kind of "
            "line ending; rewrap it, e.g. `seqkit seq -w 60 in.fa > out.fa`"
        )
    if message.startswith("Bad sequence name"):
        return "a '>' header line has no name"
    return message


def _preview(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


# ---- streaming: records front to back, no index, bounded memory ----------------------------------------------
STREAM_BLOCK = 1 << 20  # bytes read (after decompression) per step: the largest piece a record is handed out in
_MAX_HEADER = 1 << 20  # a '>' line longer than this is not a header but a broken file


class FastaRecord:
    """One record of a streamed FASTA.

    name: the header's first word; description: the whole header line after '>'; number: 1-based position
    in the file. `pieces()` yields the bases as ASCII bytes (line ends removed, case and IUPAC letters kept,
    anything else left for the tokenizer to reject), each at most one read block long. The pieces come
    straight from the file: read them before asking the stream for the next record, which skips whatever is
    left unread.
    """

    def __init__(self, name: str, description: str, number: int, pieces: Iterator[bytes]):
        self.name, self.description, self.number = name, description, number
        self._pieces = pieces

    def pieces(self) -> Iterator[bytes]:
        return self._pieces

    def read(self) -> bytes:
        """All (remaining) bases at once: only for records known to be small."""
        return b"".join(self._pieces)

    def __repr__(self) -> str:
        return f"FastaRecord({self.name!r}, number={self.number})"


def stream_fasta(path: str | os.PathLike, *, block_size: int = STREAM_BLOCK) -> Iterator[FastaRecord]:
    """Records of a FASTA file in file order, read by streaming (see the module docstring).

    Raises FastaError (one line, naming the file) for a missing, empty, truncated or non-FASTA file, a header
    with no name, or an endless header line. An empty record (a header followed by no bases) is yielded with
    no pieces: whether that is an error is the caller's call. Duplicate names are yielded as they come.
    """
    path = Path(path)
    reader = _FastaStream(path, _open_stream(path), block_size)
    with reader.handle:
        yield from reader.records()


def _open_stream(path: Path):
    """A binary file handle on the (decompressed) bytes: gzip (bgzip is gzip too) by its magic bytes."""
    magic = _first_bytes(path, 6)
    for prefix, compression in _OTHER_COMPRESSIONS.items():
        if magic.startswith(prefix):
            raise FastaError(f"{path}: is {compression}-compressed; decompress it or recompress it with gzip/bgzip")
    return gzip.open(path, "rb") if magic.startswith(b"\x1f\x8b") else open(path, "rb")


class _FastaStream:
    """The parser behind stream_fasta: one block of the file in memory, a cursor in it, and whether the
    cursor stands at the start of a line (only there does '>' open a header)."""

    def __init__(self, path: Path, handle, block_size: int):
        self.path, self.handle, self.block_size = path, handle, block_size
        self.block, self.pos, self.line_start = b"", 0, True

    def _more(self) -> bool:
        """Make block[pos:] non-empty by reading on; False at the end of the file."""
        while self.pos >= len(self.block):
            try:
                self.block, self.pos = self.handle.read(self.block_size), 0
            except (OSError, EOFError, zlib.error) as error:  # gzip: BadGzipFile is an OSError, a cut file EOFError
                raise FastaError(f"{self.path}: cannot read it, truncated or corrupt ({error})") from None
            if not self.block:
                return False
        return True

    def _bases(self) -> Iterator[bytes]:
        """Pieces of sequence from the cursor up to the next header line or the end of the file."""
        while self._more():
            if self.line_start and self.block[self.pos] == ord(">"):
                return
            header = self.block.find(b"\n>", self.pos)
            stop = len(self.block) if header < 0 else header + 1
            piece = self.block[self.pos:stop].translate(None, b"\r\n")
            self.line_start = self.block[stop - 1] == ord("\n")
            self.pos = stop
            if piece:
                yield piece

    def _header(self) -> str:
        """The header line at the cursor (which is on its '>'), without '>' and the line end."""
        parts, size = [], 0
        self.pos += 1
        while self._more():
            end = self.block.find(b"\n", self.pos)
            stop = len(self.block) if end < 0 else end
            parts.append(self.block[self.pos:stop])
            size += stop - self.pos
            self.pos = stop if end < 0 else end + 1
            if size > _MAX_HEADER:
                raise FastaError(f"{self.path}: a '>' header line is longer than {_MAX_HEADER:,} bytes; "
                                 "is this a FASTA file?")
            if end >= 0:
                break
        self.line_start = True
        return b"".join(parts).rstrip(b"\r").decode("ascii", errors="replace")

    def records(self) -> Iterator[FastaRecord]:
        for before in self._bases():  # what precedes the first '>' may be blank lines only
            if before.strip():
                raise FastaError(f"{self.path}: not a FASTA file: its first non-empty line starts with "
                                 f"{before.strip()[:40]!r}, not '>'")
        number = 0
        while self._more():
            number += 1
            description = self._header()
            words = description.split()
            if not words:
                raise FastaError(f"{self.path}: record {number} has a '>' header line with no name")
            record = FastaRecord(words[0], description, number, self._bases())
            yield record
            for _ in record.pieces():  # the caller may stop early: skip to the next header
                pass
        if number == 0:
            raise FastaError(f"{self.path}: is empty (no '>' record)")
