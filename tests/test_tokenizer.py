"""DNA tokenizer: fixed ids, case and IUPAC handling, error messages, reverse complement on numpy and torch."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mambaseq.tokenizers import (
    A_ID, C_ID, G_ID, N_ID, PAD_ID, T_ID, VOCAB_SIZE, TokenizerError, decode, encode, reverse_complement,
)

IUPAC_AMBIGUOUS = "RYKMSWBDHV"
DNA_LETTERS = "ACGTN" + IUPAC_AMBIGUOUS
DNA_LETTERS += DNA_LETTERS.lower()


def canonical(seq: str) -> str:
    """Plain-Python oracle: upper case, every ambiguity code as N."""
    return "".join("N" if base in IUPAC_AMBIGUOUS else base for base in seq.upper())


def reverse_complement_oracle(seq: str) -> str:
    return "".join({"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}[base] for base in reversed(seq))


def test_fixed_ids():
    assert (PAD_ID, A_ID, C_ID, G_ID, T_ID, N_ID, VOCAB_SIZE) == (0, 1, 2, 3, 4, 5, 6)
    assert encode("ACGTN").tolist() == [A_ID, C_ID, G_ID, T_ID, N_ID]


def test_round_trip_and_soft_masking():
    ids = encode("ACGTNacgtn")
    assert ids.dtype == np.uint8 and ids.flags.writeable
    assert ids.tolist() == encode("ACGTNACGTN").tolist()
    assert decode(ids) == "ACGTNACGTN"


@pytest.mark.parametrize("code", IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower())
def test_iupac_ambiguity_codes_become_n(code):
    assert encode(f"A{code}C").tolist() == [A_ID, N_ID, C_ID]


def test_every_input_type_gives_the_same_ids():
    expected = encode("ACGTNacgtnRy")
    raw = b"ACGTNacgtnRy"
    for seq in (bytes(raw), bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8)):
        np.testing.assert_array_equal(encode(seq), expected)


def test_array_input_keeps_its_shape():
    batch = np.frombuffer(b"ACGTacgtNNRY", dtype=np.uint8).reshape(3, 4)
    assert encode(batch).shape == (3, 4)
    with pytest.raises(TokenizerError, match=r"' ' at position \(1, 2\)"):
        encode(np.frombuffer(b"ACGTac tNNRY", dtype=np.uint8).reshape(3, 4))


def test_wrong_input_types():
    with pytest.raises(TypeError, match="uint8"):
        encode(np.array([65, 67], dtype=np.int64))
    with pytest.raises(TypeError, match="list"):
        encode(["A", "C"])


@pytest.mark.parametrize(
    "seq, shown, position",
    [
        ("ACGT-A", "'-'", 4),
        ("AC GT", "' '", 2),
        ("ACGT\n", r"'\\n'", 4),
        ("ACGT\r", r"'\\r'", 4),
        ("1ACG", "'1'", 0),
        ("ACGU", "'U'", 3),  # RNA is not DNA
        ("acgu", "'u'", 3),
        ("ACXG", "'X'", 2),
        ("AC*G", r"'\*'", 2),
        ("ACéG", "'é'", 2),
        (b"AC\xffG", r"'\\xff'", 2),
        (b"ACG\x00", r"'\\x00'", 3),
    ],
)
def test_invalid_character_is_named_with_its_position(seq, shown, position):
    with pytest.raises(TokenizerError, match=rf"character {shown} at position {position} in record 'chr7'") as error:
        encode(seq, name="chr7")
    assert "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)


def test_sequences_longer_than_one_encoding_chunk():
    seq = "ACGTN" * 200_000  # 1 Mb: several internal chunks
    assert decode(encode(seq)) == seq
    with pytest.raises(TokenizerError, match="'-' at position 999999;"):
        encode(seq[:-1] + "-")


def test_error_without_a_record_name():
    with pytest.raises(TokenizerError, match=r"'\.' at position 1;"):
        encode("A.C")


def test_decode_drops_padding_and_checks_ids():
    assert decode(np.array([A_ID, C_ID, PAD_ID, PAD_ID])) == "AC"
    assert decode(torch.tensor([G_ID, T_ID, N_ID])) == "GTN"
    assert decode(np.array([], dtype=np.uint8)) == ""
    with pytest.raises(TokenizerError, match="id 7 at position 1"):
        decode(np.array([A_ID, 7]))
    with pytest.raises(TokenizerError, match="id -1 at position 0"):
        decode(torch.tensor([-1]))
    with pytest.raises(TypeError, match="1-D"):
        decode(np.zeros((2, 2), dtype=np.uint8))


def test_reverse_complement_known_answer():
    ids = encode("AACGTNc")
    assert decode(reverse_complement(ids)) == "GNACGTT"
    assert torch.from_numpy(reverse_complement(ids)).is_contiguous()  # no negative strides left behind
    tensor_rc = reverse_complement(torch.from_numpy(ids).long())
    assert tensor_rc.dtype == torch.int64
    assert decode(tensor_rc) == "GNACGTT"


def test_reverse_complement_of_a_padded_batch():
    batch = np.array([[A_ID, A_ID, C_ID, PAD_ID, PAD_ID], [G_ID, T_ID, N_ID, A_ID, C_ID]], dtype=np.uint8)
    flipped = reverse_complement(batch)  # padding moves to the front
    assert flipped[0].tolist() == [PAD_ID, PAD_ID, G_ID, T_ID, T_ID]
    kept = reverse_complement(batch, lengths=[3, 5])  # padding stays at the end
    assert kept.tolist() == [[G_ID, T_ID, T_ID, PAD_ID, PAD_ID], [G_ID, T_ID, N_ID, A_ID, C_ID]]
    tensor_kept = reverse_complement(torch.from_numpy(batch), lengths=torch.tensor([3, 5]))
    assert tensor_kept.dtype == torch.uint8
    assert tensor_kept.tolist() == kept.tolist()


def test_reverse_complement_rejects_bad_lengths():
    batch = np.zeros((2, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="one per row"):
        reverse_complement(batch, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"0\.\.4"):
        reverse_complement(torch.from_numpy(batch), lengths=[1, 5])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=DNA_LETTERS, max_size=300))
def test_encode_decode_matches_the_oracle(seq):
    assert decode(encode(seq)) == canonical(seq)
    assert decode(reverse_complement(encode(seq))) == reverse_complement_oracle(canonical(seq))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=DNA_LETTERS, max_size=50), st.characters(exclude_characters=DNA_LETTERS), st.text(max_size=20))
def test_first_invalid_character_is_reported(valid_prefix, invalid, rest):
    with pytest.raises(TokenizerError, match=rf" at position {len(valid_prefix)}[ ;]"):
        encode(valid_prefix + invalid + rest)


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(0, 40)), elements=st.integers(0, VOCAB_SIZE - 1)),
    st.data(),
)
def test_reverse_complement_is_an_involution_on_numpy_and_torch(ids, data):
    rows, length = ids.shape
    lengths = np.array(data.draw(st.lists(st.integers(0, length), min_size=rows, max_size=rows)))
    for lens in (None, lengths):
        twice = reverse_complement(reverse_complement(ids, lens), lens)
        np.testing.assert_array_equal(twice, ids)
        tensor = torch.from_numpy(ids)
        tensor_lens = None if lens is None else torch.from_numpy(lens)
        once = reverse_complement(tensor, tensor_lens)
        np.testing.assert_array_equal(once.numpy(), reverse_complement(ids, lens))
        assert torch.equal(reverse_complement(once, tensor_lens), tensor)
