"""engine.ranges.RangeBoard: pieces, split on free, movable ends, every byte exactly once."""

from __future__ import annotations

import random
import threading
import time

import pytest

from hfpull.engine.ranges import Piece, RangeBoard

MiB = 1 << 20


def board_of(missing: list[tuple[int, int]], piece_size: int, min_split: int) -> RangeBoard:
    """A board that splits by size alone (no split is ever judged too quick to pay off)."""
    return RangeBoard(missing, piece_size, min_split, min_seconds=0.0, clock=lambda: 0.0)


def drain(board: RangeBoard, piece: Piece, chunk: int, log: list[tuple[int, int]]) -> None:
    """Act as the piece's owner: reserve chunk by chunk until its end, recording each write."""
    while piece.pos < piece.end:
        offset = piece.pos
        allowed = board.reserve(piece, chunk)
        if allowed:
            log.append((offset, offset + allowed))
        time.sleep(0)  # let the other takers in, as a network read would
    board.finished(piece)


def covered_exactly_once(log: list[tuple[int, int]], missing: list[tuple[int, int]]) -> bool:
    """The written ranges tile ``missing``: no overlap, no gap, nothing outside."""
    ranges = sorted(log)
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start < merged[-1][1]:
            return False  # overlap
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged == merge(missing)


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def test_piece_size_is_one_piece_per_connection_with_a_floor_and_an_optional_cap() -> None:
    assert RangeBoard.piece_size_for(64 * MiB, 8, 2 * MiB, 0) == 8 * MiB
    assert RangeBoard.piece_size_for(3 * MiB, 8, 2 * MiB, 0) == 2 * MiB  # never below the floor
    assert RangeBoard.piece_size_for(64 * MiB, 8, 2 * MiB, 4 * MiB) == 4 * MiB  # cap wins
    assert RangeBoard.piece_size_for(10, 3, 1, 0) == 4  # rounded up: 3 pieces, not 4


def test_pieces_cover_the_missing_ranges_lowest_first() -> None:
    board = board_of([(0, 10), (20, 25)], piece_size=4, min_split=100)
    taken = []
    while (piece := board.take()) is not None:
        taken.append((piece.start, piece.end))
    assert taken == [(0, 4), (4, 8), (8, 10), (20, 24), (24, 25)]


def test_a_free_connection_splits_the_largest_range_in_flight_at_its_position() -> None:
    board = board_of([(0, 100)], piece_size=50, min_split=5)
    first, second = board.take(), board.take()
    assert first is not None and second is not None
    board.reserve(first, 10)  # first has fetched [0, 10): 40 left
    board.reserve(second, 30)  # second has fetched [50, 80): 20 left
    third = board.take()
    assert third is not None
    # The largest remainder is first's [10, 50): split at 10 + 40 // 2.
    assert (third.start, third.pos, third.end) == (30, 30, 50)
    assert first.end == 30
    assert board.splits == 1


def test_the_owner_never_reserves_past_a_moved_end() -> None:
    board = board_of([(0, 100)], piece_size=100, min_split=10)
    owner = board.take()
    assert owner is not None
    assert board.reserve(owner, 20) == 20
    thief = board.take()  # splits [20, 100) at 60
    assert thief is not None and owner.end == 60
    assert board.reserve(owner, 35) == 35  # [20, 55)
    assert board.reserve(owner, 35) == 5  # only [55, 60) is still ours
    assert board.reserve(owner, 35) == 0
    assert owner.pos == 60 and thief.pos == 60


def test_no_split_leaves_a_half_below_the_minimum() -> None:
    board = board_of([(0, 100)], piece_size=100, min_split=30)
    owner = board.take()
    assert owner is not None
    board.reserve(owner, 41)  # 59 left: halves of 29 and 30, one below the minimum
    assert not board.has_work()
    assert board.take() is None
    assert owner.end == 100
    board2 = board_of([(0, 100)], piece_size=100, min_split=30)
    owner2 = board2.take()
    assert owner2 is not None
    board2.reserve(owner2, 40)  # 60 left: two halves of 30
    assert board2.has_work()
    split = board2.take()
    assert split is not None and (split.pos, split.end) == (70, 100)


def test_a_file_too_small_to_split_is_one_connection() -> None:
    assert not board_of([(0, 3 * MiB)], 3 * MiB, 2 * MiB).can_ever_split()
    assert board_of([(0, 4 * MiB)], 4 * MiB, 2 * MiB).can_ever_split()
    assert board_of([(0, MiB), (2 * MiB, 3 * MiB)], 2 * MiB, 2 * MiB).can_ever_split()


def test_a_piece_given_back_is_taken_again_from_where_it_stopped() -> None:
    board = board_of([(0, 100)], piece_size=100, min_split=60)
    owner = board.take()
    assert owner is not None
    board.reserve(owner, 30)
    board.finished(owner)  # left early (the budget shrank) at byte 30
    assert owner.end == 30
    again = board.take()
    assert again is not None and (again.pos, again.end) == (30, 100)


def test_random_interleavings_write_every_byte_exactly_once() -> None:
    rng = random.Random(7)
    for _ in range(200):
        size = rng.randint(1, 5000)
        cuts = sorted(rng.sample(range(1, size + 1), k=min(size, rng.randint(1, 6))))
        missing = [(a, b) for a, b in zip([0, *cuts], cuts) if rng.random() < 0.7 and b > a]
        if not missing:
            continue
        board = board_of(missing, rng.randint(1, 2000), rng.randint(1, 300))
        log: list[tuple[int, int]] = []
        active: list[Piece] = []
        while True:
            choice = rng.random()
            if choice < 0.3 or not active:
                piece = board.take()
                if piece is None and not active:
                    break
                if piece is not None:
                    active.append(piece)
                continue
            piece = rng.choice(active)
            offset = piece.pos
            allowed = board.reserve(piece, rng.randint(1, 400))
            if allowed:
                log.append((offset, offset + allowed))
            if piece.pos >= piece.end:
                board.finished(piece)
                active.remove(piece)
            elif choice > 0.97:  # gives back the rest (a connection shed)
                board.finished(piece)
                active.remove(piece)
        assert covered_exactly_once(log, missing), (missing, log)
        assert board.unfinished() == []


def test_concurrent_takers_share_the_file_without_overlap() -> None:
    missing = [(0, 3 * MiB + 17), (4 * MiB, 9 * MiB)]
    board = board_of(missing, piece_size=2 * MiB, min_split=64 * 1024)
    logs: list[list[tuple[int, int]]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def connection(log: list[tuple[int, int]]) -> None:
        start.wait()
        rng = random.Random(id(log))
        while (piece := board.take()) is not None:
            drain(board, piece, rng.randint(1000, 40_000), log)

    threads = [threading.Thread(target=connection, args=(log,)) for log in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert covered_exactly_once([r for log in logs for r in log], missing)
    assert board.splits > 0  # 8 takers, 4 pieces: the others split pieces in flight
    assert sum(1 for log in logs if log) > 4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_piece_that_will_take_longest_is_split_not_the_one_with_most_bytes() -> None:
    clock = Clock()
    missing = [(0, 130 * MiB)]
    board = RangeBoard(missing, 100 * MiB, MiB, min_seconds=0.2, clock=clock)
    fast, slow = board.take(), board.take()  # [0, 100) MiB and [100, 130) MiB
    assert fast is not None and slow is not None
    board.reserve(fast, MiB)  # the first chunk starts the clock of each piece
    board.reserve(slow, MiB)
    clock.now = 1.0
    board.reserve(fast, 50 * MiB)  # 50 MiB/s: 49 MiB left, about 1 s
    board.reserve(slow, 1 * MiB)  # 1 MiB/s: 28 MiB left, 28 s
    third = board.take()
    assert third is not None
    assert (third.start, third.end) == (116 * MiB, 130 * MiB) and slow.end == 116 * MiB
    assert fast.end == 100 * MiB


def test_a_piece_about_to_finish_or_just_started_is_left_alone() -> None:
    clock = Clock()
    board = RangeBoard([(0, 100 * MiB)], 100 * MiB, MiB, min_seconds=0.2, clock=clock)
    owner = board.take()
    assert owner is not None
    assert not board.has_work()  # just taken, no rate yet: give it a chance
    board.reserve(owner, MiB)
    clock.now = 1.0
    board.reserve(owner, 90 * MiB)  # 90 MiB/s, 9 MiB left: 0.1 s
    assert not board.has_work() and board.take() is None
    stuck = RangeBoard([(0, 100 * MiB)], 100 * MiB, MiB, min_seconds=0.2, clock=clock)
    assert stuck.take() is not None
    clock.now = 1.5  # no byte for longer than min_seconds: connecting or retrying
    assert stuck.has_work()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        RangeBoard([(0, 10)], 0, 1)
