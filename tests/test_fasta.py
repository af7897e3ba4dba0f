"""FASTA access: real hg38 pieces (plain and bgzip), index reuse/rebuild/cache, bad input, worker processes."""
import copy
import gzip
import os
from pathlib import Path

import pytest
import torch
from Bio import bgzf
from torch.utils.data import DataLoader, Dataset

from mambaseq.io.fasta import FastaError, main_chromosomes, open_fasta
from mambaseq.tokenizers import TokenizerError, decode, encode

CHR2 = "genome/hg38_chr2_1-2333275.fa"
CHR2_LENGTH = 2_333_275
SMALL = b">a first record\nACGTACGTAC\nacgtNN\n>b\nGGCC\nTT\n"

pytestmark = pytest.mark.filterwarnings("error")  # e.g. pyfaidx's "index older than FASTA" must never be reached


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch) -> Path:
    """Point the default index cache into tmp_path, so no test writes to the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "mambaseq" / "fai"


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def write_bgzf(path: Path, data: bytes) -> Path:
    with bgzf.BgzfWriter(str(path), "wb") as writer:
        writer.write(data)
    return path


def snapshot(folder: Path) -> dict[str, int]:
    return {entry.name: entry.stat().st_mtime_ns for entry in folder.iterdir()}


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    yield folder
    folder.chmod(0o755)  # let pytest clean tmp_path up


# --- the real data: read-only folder with shipped indexes ---------------------------------------------------------

def test_real_genome_opens_without_writing(shared_data, cache_home):
    before = snapshot(shared_data / "genome")
    with open_fasta(shared_data / CHR2) as plain, open_fasta(shared_data / f"{CHR2}.gz") as compressed:
        assert plain.names == compressed.names == ["chr2"]
        assert plain.lengths == compressed.lengths == {"chr2": CHR2_LENGTH}
        assert plain.index_path == shared_data / f"{CHR2}.fai"
        assert compressed.gzi_path == shared_data / f"{CHR2}.gz.gzi"
        for start, end in [(0, 50), (9_990, 10_070), (1_000_001, 1_131_073), (CHR2_LENGTH - 77, CHR2_LENGTH)]:
            assert plain.fetch("chr2", start, end) == compressed.fetch("chr2", start, end)
    assert snapshot(shared_data / "genome") == before
    assert not cache_home.exists()


def test_real_genome_content(shared_data):
    with open_fasta(shared_data / CHR2) as genome:
        chr2 = genome.fetch("chr2", 0, CHR2_LENGTH)
        assert chr2[:10_000] == b"N" * 10_000  # telomere gap
        assert genome.fetch("chr2", 10_000, 10_015) == b"CGTATcccacacacc"  # soft-masked repeat stays lower case
        # Base counts published in genome/SOURCE.md.
        counts = {letter: chr2.count(letter.encode()) for letter in "ACGTacgtN"}
        assert counts == {"A": 401_372, "C": 349_965, "G": 343_556, "T": 396_875, "a": 242_741,
                          "c": 175_527, "g": 175_275, "t": 237_964, "N": 10_000}
        ids = encode(chr2, name="chr2")
        assert decode(ids[10_000:10_015]) == "CGTATCCCACACACC"


class Windows(Dataset):
    def __init__(self, genome):
        self.genome = genome

    def __len__(self):
        return 8

    def __getitem__(self, index):
        start = 10_000 + index * 250_000
        return torch.from_numpy(encode(self.genome.fetch("chr2", start, start + 512), name="chr2"))


@pytest.mark.parametrize("name", [CHR2, f"{CHR2}.gz"])
def test_dataloader_workers_read_the_same_windows(shared_data, name):
    genome = open_fasta(shared_data / name)
    expected = torch.stack([Windows(genome)[i] for i in range(8)])
    loader = DataLoader(Windows(genome), batch_size=2, num_workers=2, multiprocessing_context="fork")
    assert torch.equal(torch.cat(list(loader)), expected)


def test_a_forked_process_opens_its_own_handle(tmp_path):
    genome = open_fasta(write(tmp_path, "small.fa", SMALL))
    parent_handle = genome._faidx()
    pid = os.fork()
    if pid == 0:  # child: must not share the parent's file offset
        fetched = genome.fetch("a", 0, 4)
        os._exit(0 if fetched == b"ACGT" and genome._handle is not parent_handle else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert genome._handle is parent_handle


def test_a_copy_carries_paths_not_the_handle(shared_data):
    genome = open_fasta(shared_data / f"{CHR2}.gz")
    twin = copy.deepcopy(genome)  # what a spawned worker receives: the state from __getstate__
    assert twin._handle is None
    assert twin.fetch("chr2", 20_000, 20_100) == genome.fetch("chr2", 20_000, 20_100)


def test_relative_path_survives_a_change_of_directory(tmp_path, monkeypatch):
    write(tmp_path, "small.fa", SMALL)
    monkeypatch.chdir(tmp_path)
    genome = open_fasta("small.fa")
    monkeypatch.chdir(tmp_path.parent)
    assert copy.deepcopy(genome).fetch("b", 0, 4) == b"GGCC"


# --- index: build, reuse, stale, read-only folders ----------------------------------------------------------------

def test_missing_index_is_built_beside_the_fasta(tmp_path):
    path = write(tmp_path, "small.fa", SMALL)
    genome = open_fasta(path)
    assert genome.index_path == tmp_path / "small.fa.fai"
    assert genome.names == ["a", "b"] and genome.lengths == {"a": 16, "b": 6}
    assert genome.fetch("a", 8, 14) == b"ACacgt"
    assert genome.fetch("b", 0, 6) == b"GGCCTT"
    assert genome.fetch("b", 3, 3) == b""
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_bgzip_fasta_gets_fai_and_gzi(tmp_path):
    path = write_bgzf(tmp_path / "small.fa.gz", SMALL)
    genome = open_fasta(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.fa.gz", "small.fa.gz.fai", "small.fa.gz.gzi"]
    assert genome.fetch("a", 8, 14) == b"ACacgt"


def test_index_older_than_the_fasta_is_rebuilt(tmp_path):
    path = write(tmp_path, "small.fa", SMALL)
    index = open_fasta(path).index_path
    os.utime(index, ns=(0, 0))
    open_fasta(path)
    assert index.stat().st_mtime_ns >= path.stat().st_mtime_ns


@pytest.mark.parametrize(
    "stale_index",
    ["a\t16\t16\t10\t11\nb\t5\t37\t4\t5\n", "a\t16\t16\t10\t11\nc\t6\t37\t4\t5\n", "a\t16\t16\t10\t11\n", "junk\n"],
    ids=["wrong-length", "wrong-name", "record-missing", "unparsable"],
)
def test_index_that_does_not_match_the_fasta_is_rebuilt(tmp_path, stale_index):
    path = write(tmp_path, "small.fa", SMALL)
    index = write(tmp_path, "small.fa.fai", stale_index.encode())  # newer than the FASTA, but wrong
    genome = open_fasta(path)
    assert genome.lengths == {"a": 16, "b": 6}
    assert index.read_text() == "a\t16\t16\t10\t11\nb\t6\t37\t4\t5\n"


def test_current_index_is_reused_untouched(tmp_path):
    path = write(tmp_path, "small.fa", SMALL)
    index = open_fasta(path).index_path
    before = index.stat().st_mtime_ns
    open_fasta(path)
    assert index.stat().st_mtime_ns == before


def test_read_only_folder_gets_its_index_in_the_cache(read_only_folder, cache_home):
    path = write(read_only_folder, "small.fa", SMALL)
    read_only_folder.chmod(0o555)
    genome = open_fasta(path)
    assert list(read_only_folder.iterdir()) == [path]  # holds even for root: write bits are honoured
    assert genome.index_path.parent == cache_home
    assert genome.index_path.name.endswith("-small.fa.fai")
    assert genome.fetch("b", 0, 2) == b"GG"
    reopened = open_fasta(path)
    assert reopened.index_path == genome.index_path


def test_stale_index_in_read_only_folder_is_rebuilt_in_index_dir(read_only_folder, tmp_path):
    path = write(read_only_folder, "small.fa.gz", b"")
    write_bgzf(path, SMALL)
    shipped = write(read_only_folder, "small.fa.gz.fai", b"a\t16\t17\t10\t11\n")
    os.utime(shipped, ns=(0, 0))
    read_only_folder.chmod(0o555)
    genome = open_fasta(path, index_dir=tmp_path / "indexes")
    assert genome.index_path.parent == tmp_path / "indexes"
    assert genome.gzi_path.parent == tmp_path / "indexes"
    assert genome.names == ["a", "b"]
    assert shipped.read_bytes() == b"a\t16\t17\t10\t11\n"


def test_stale_index_that_cannot_be_rewritten_is_reported(read_only_folder, tmp_path):
    path = write(read_only_folder, "small.fa", SMALL)
    shipped = write(read_only_folder, "small.fa.fai", b"a\t16\t17\t10\t11\n")
    os.utime(shipped, ns=(0, 0))
    read_only_folder.chmod(0o555)
    blocked = write(tmp_path, "a_file", b"") / "indexes"  # a folder below a file cannot be made, even by root
    with pytest.raises(FastaError, match=r"small\.fa: cannot use its index \(.*older than the FASTA\).*index_dir="):
        open_fasta(path, index_dir=blocked)


# --- layouts pyfaidx accepts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "data",
    [
        SMALL.replace(b"\n", b"\r\n"),
        SMALL.replace(b">b", b"\n>b"),  # blank line between records
        b"\n\n" + SMALL,  # blank lines before the first record
        SMALL.rstrip(b"\n"),  # no final line end
    ],
    ids=["crlf", "blank-between-records", "leading-blank-lines", "no-final-newline"],
)
def test_accepted_layouts(tmp_path, data):
    genome = open_fasta(write(tmp_path, "x.fa", data))
    assert genome.lengths == {"a": 16, "b": 6}
    assert genome.fetch("a", 0, 16) == b"ACGTACGTACacgtNN"
    assert genome.fetch("b", 1, 6) == b"GCCTT"


def test_a_whole_record_on_one_long_line(tmp_path):
    bases = b"ACGTTGCA" * 250_000
    genome = open_fasta(write(tmp_path, "x.fa", b">long\n" + bases + b"\n>short\nAC\n"))
    assert genome.lengths == {"long": len(bases), "short": 2}
    assert genome.fetch("long", 1_999_990, 2_000_000) == bases[-10:]


# --- bad input: one FastaError naming the file --------------------------------------------------------------------

@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "is empty"),
        (b"\n  \n\n", "is empty"),
        (b"ACGT\n>a\nAC\n", "not a FASTA file: its first non-empty line starts with b'ACGT'"),
        (b"\x00\x01binary", "not a FASTA file"),
        (b">a\n>b\nGG\n", "record 'a' has no sequence"),
        (b">a\nAC\n>b\n", "record 'b' has no sequence"),
        (b">a\nAC\n>a second\nGG\n", "duplicate record name 'a'"),
        (b">a\nACGT\nACGTA\nAC\n", "record 'a' has lines of unequal length (first at line 3)"),
        (b">a\nACGT\n\nACGT\nAC\n", "record 'a' has lines of unequal length (first at line 3)"),
        (b">a\nACGT\r\nACGT\nAC\n", "one kind of line ending"),
        (b">\nAC\n", "header line has no name"),
        (b">a\nAC\xe9GT\n", "non-ASCII byte"),
    ],
    ids=["empty", "blank", "no-header", "binary", "no-sequence-first", "no-sequence-last", "duplicate",
         "uneven-lines", "blank-line-inside", "mixed-line-ends", "nameless-header", "non-ascii"],
)
def test_bad_fasta(tmp_path, data, message):
    path = write(tmp_path, "bad.fa", data)
    with pytest.raises(FastaError) as error:
        open_fasta(path)
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FastaError, match=r"nope\.fa: no such file"):
        open_fasta(tmp_path / "nope.fa")
    with pytest.raises(FastaError, match="is a folder"):
        open_fasta(tmp_path)


def test_plain_gzip_says_how_to_recompress(tmp_path):
    path = tmp_path / "x.fa.gz"
    path.write_bytes(gzip.compress(SMALL))
    with pytest.raises(FastaError, match=r"x\.fa\.gz: is plain gzip.*`zcat .*x\.fa\.gz \| bgzip > .*x\.fa\.bgz`"):
        open_fasta(path)


def test_compression_and_file_name_must_agree(tmp_path):
    with pytest.raises(FastaError, match="bgzip-compressed but not named .gz"):
        open_fasta(write_bgzf(tmp_path / "x.fa", SMALL))
    with pytest.raises(FastaError, match=r"named \.gz but is not gzip-compressed; rename it to y\.fa"):
        open_fasta(write(tmp_path, "y.fa.gz", SMALL))
    with pytest.raises(FastaError, match="is bzip2-compressed"):
        open_fasta(write(tmp_path, "z.fa.bz2", b"BZh91AY&SY"))


def test_bad_fetches(tmp_path):
    genome = open_fasta(write(tmp_path, "small.fa", SMALL))
    with pytest.raises(FastaError, match=r"no record named 'chrZ' \(records: a, b\)"):
        genome.fetch("chrZ", 0, 1)
    for start, end in [(-1, 3), (5, 2), (0, 7)]:
        with pytest.raises(FastaError, match=rf"interval b:{start}-{end} does not lie within b:0-6"):
            genome.fetch("b", start, end)


def test_non_ascii_byte_found_by_a_fetch(tmp_path):
    path = write(tmp_path, "small.fa", SMALL)
    open_fasta(path)  # index the clean file, then corrupt one base behind the index's back
    before = path.stat()
    path.write_bytes(SMALL.replace(b"GGCC", b"GG\xe9C"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    genome = open_fasta(path)
    assert genome.fetch("b", 0, 2) == b"GG"
    with pytest.raises(FastaError, match=r"small\.fa: non-ASCII byte in b:0-4"):
        genome.fetch("b", 0, 4)


def test_non_dna_letters_surface_in_the_tokenizer(tmp_path):
    genome = open_fasta(write(tmp_path, "gaps.fa", b">aln\nAC-GT\n"))
    with pytest.raises(TokenizerError, match="'-' at position 2 in record 'aln'"):
        encode(genome.fetch("aln", 0, 5), name="aln")


def test_main_chromosomes_in_natural_order():
    names = ["chrM", "chr10", "chr2", "chrX", "chr1", "chrY", "chr1_KI270706v1_random", "chr22", "chr23", "chrUn_x"]
    assert main_chromosomes(names) == ["chr1", "chr2", "chr10", "chr22", "chrX", "chrY"]
    assert main_chromosomes(["MT", "X", "2", "1", "10", "GL000192.1"]) == ["1", "2", "10", "X"]
