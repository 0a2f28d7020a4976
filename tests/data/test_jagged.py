import torch

from recstack.data.jagged import Jagged


def test_from_lists_roundtrip_and_lengths():
    j = Jagged.from_lists([[1, 2, 3], [], [4]])
    assert j.num_rows == 3
    assert j.lengths().tolist() == [3, 0, 1]
    assert j.tolist() == [[1, 2, 3], [], [4]]
    assert j.row_ids().tolist() == [0, 0, 0, 2]


def test_select_any_order_with_repeats():
    j = Jagged.from_lists([[1, 2], [3], [], [4, 5, 6]])
    assert j.select(torch.tensor([3, 0, 3, 2])).tolist() == [[4, 5, 6], [1, 2], [4, 5, 6], []]
    assert j.select(torch.tensor([2])).tolist() == [[]]


def test_last_keeps_tail():
    j = Jagged.from_lists([[1, 2, 3, 4], [5], []])
    assert j.last(2).tolist() == [[3, 4], [5], []]


def test_to_padded_right_and_left_alignment():
    j = Jagged.from_lists([[1, 2, 3], [4]])
    assert j.to_padded().tolist() == [[1, 2, 3], [0, 0, 4]]
    assert j.to_padded(align="left").tolist() == [[1, 2, 3], [4, 0, 0]]
    assert j.to_padded(max_len=2).tolist() == [[2, 3], [0, 4]]


def test_offsets_must_match_values():
    try:
        Jagged(torch.tensor([1, 2]), torch.tensor([0, 3]))
    except ValueError as exc:
        assert "offsets end at 3" in str(exc)
    else:
        raise AssertionError("expected ValueError")
