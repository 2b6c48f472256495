"""The JSON Lines buffer: durable appends, torn and corrupt lines, chunked checkpointed drain."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import jsonl
from shared.jsonl import JsonlFile


def drain(buf: JsonlFile, chunk: int = 3) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for c in buf.iter_chunks(chunk):
        out.extend(c.records)
        buf.commit(c.end_offset)
    return out


def test_append_creates_parents_mode_0600_and_round_trips(tmp_path: Path) -> None:
    buf = JsonlFile(tmp_path / "a" / "b" / "buf.jsonl")
    rows = [{"i": i, "s": "x" * i} for i in range(10)]
    buf.append(rows[:4])
    buf.append(rows[4:])
    assert stat.S_IMODE(buf.path.stat().st_mode) == 0o600
    assert buf.count()[0] == 10
    assert drain(buf) == rows
    assert buf.is_empty()
    buf.clear()
    assert buf.count() == (0, 0)


def test_checkpoint_resumes_after_crash(tmp_path: Path) -> None:
    buf = JsonlFile(tmp_path / "buf.jsonl")
    buf.append([{"i": i} for i in range(10)])
    chunks = buf.iter_chunks(4)
    first = next(chunks)
    buf.commit(first.end_offset)
    chunks.close()  # "crash" after the first committed chunk
    again = JsonlFile(buf.path)
    assert [r["i"] for r in drain(again, 100)] == list(range(4, 10))


def test_torn_last_line_set_aside_and_complete_lines_kept(tmp_path: Path) -> None:
    buf = JsonlFile(tmp_path / "buf.jsonl")
    buf.append([{"i": 1}, {"i": 2}])
    with open(buf.path, "ab") as fh:
        fh.write(b'{"i": 3, "tor')
    bad: list[tuple[int, str]] = []
    records = [
        r for c in buf.iter_chunks(10, on_bad=lambda n, w: bad.append((n, w))) for r in c.records
    ]
    assert [r["i"] for r in records] == [1, 2]
    assert bad and bad[0][1] == "torn last line"
    assert b'{"i": 3, "tor' in buf.bad_path.read_bytes()


def test_append_after_torn_tail_does_not_glue_lines(tmp_path: Path) -> None:
    buf = JsonlFile(tmp_path / "buf.jsonl")
    buf.append([{"i": 1}])
    with open(buf.path, "ab") as fh:
        fh.write(b'{"i": 2, "x"')
    buf.append([{"i": 3}])
    assert [r["i"] for r in drain(buf)] == [1, 3]
    assert b'{"i": 2, "x"' in buf.bad_path.read_bytes()


def test_corrupt_middle_line_moved_and_rest_drains(tmp_path: Path) -> None:
    buf = JsonlFile(tmp_path / "buf.jsonl")
    buf.path.write_bytes(b'{"i":1}\nGARBAGE \xff\n[1,2]\n{"i":2}\n')
    reasons: list[str] = []
    records = [
        r for c in buf.iter_chunks(10, on_bad=lambda n, w: reasons.append(w)) for r in c.records
    ]
    assert [r["i"] for r in records] == [1, 2]
    assert reasons == ["corrupt line"]
    assert buf.bad_path.read_bytes().count(b"\n") == 2


def test_failed_append_cuts_its_partial_write_and_the_next_one_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up in the middle of a batch: part of it is written, then ENOSPC. The
    error reaches the caller, the buffer keeps exactly its earlier bytes (no partial line), and
    the next append goes through. Injected at os.write, so root cannot bypass it."""
    buf = JsonlFile(tmp_path / "buf.jsonl")
    buf.append([{"i": 1}, {"i": 2}])
    before = buf.path.read_bytes()
    inode = buf.path.stat().st_ino
    real_write = os.write
    written: list[int] = []

    def disk_fills_up(fd: int, data: bytes) -> int:
        if os.fstat(fd).st_ino != inode:
            return real_write(fd, data)
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(real_write(fd, bytes(data[: len(data) // 2])))
        return written[-1]

    batch = [{"i": i, "pad": "x" * 40} for i in range(3, 13)]
    with monkeypatch.context() as mp:
        mp.setattr(os, "write", disk_fills_up)
        with pytest.raises(OSError) as failed:
            buf.append(batch)
    assert failed.value.errno == errno.ENOSPC
    assert written and written[0] > 0  # the partial write did reach the file
    assert buf.path.read_bytes() == before
    assert buf.count()[0] == 2
    assert not buf.bad_path.exists()
    buf.append(batch)  # the caller retries the whole batch
    assert drain(buf) == [{"i": 1}, {"i": 2}, *batch]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
records = st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=20)


@settings(max_examples=150, deadline=None)
@given(records, st.binary(max_size=200))
def test_reader_never_raises_never_drops_a_valid_line(tmp_path_factory, rows, tail) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("h") / "buf.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + tail)
    buf = JsonlFile(path)
    got = [r for c in buf.iter_chunks(7) for r in c.records]
    assert got[: len(rows)] == rows
    for extra in got[len(rows) :]:
        assert isinstance(extra, dict)


def _is_subsequence(needles: list[object], haystack: list[object]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.binary(max_size=40)
        ),
        max_size=15,
    ),
    st.binary(max_size=200),
    st.integers(1, 5),
)
def test_garbage_between_lines_never_hides_a_valid_line(  # type: ignore[no-untyped-def]
    tmp_path_factory, pairs, tail, chunk
) -> None:
    """Whatever bytes sit between and after complete lines, every valid line comes out, in
    order, and the reader does not raise; the garbage goes to `.bad`, not into the records."""
    path = tmp_path_factory.mktemp("g") / "buf.jsonl"
    body = b"".join(orjson.dumps(r) + b"\n" + junk + b"\n" for r, junk in pairs)
    path.write_bytes(body + tail)
    buf = JsonlFile(path)
    got = [r for c in buf.iter_chunks(chunk) for r in c.records]
    rows = [r for r, _ in pairs]
    assert _is_subsequence(rows, got)
    assert all(isinstance(r, dict) for r in got)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=12),
    st.binary(max_size=60),
)
def test_append_after_any_tail_keeps_every_line(tmp_path_factory, rows, tail) -> None:  # type: ignore[no-untyped-def]
    """A crash left any bytes at the end: the next append neither glues onto them nor loses a
    complete line, and what it appends drains after them."""
    path = tmp_path_factory.mktemp("t") / "buf.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + tail)
    buf = JsonlFile(path)
    buf.append([{"after": 1}, {"after": 2}])
    got = [r for c in buf.iter_chunks(5) for r in c.records]
    assert _is_subsequence(rows, got)
    assert got[-2:] == [{"after": 1}, {"after": 2}]


def test_torn_tail_cut_below_a_checkpoint_moves_the_checkpoint(tmp_path: Path) -> None:
    """A drain committed past a torn fragment, then a crash before clear(): new lines appended
    after the fragment is cut must not be skipped."""
    buf = JsonlFile(tmp_path / "buf.jsonl")
    buf.append([{"i": 1}])
    with open(buf.path, "ab") as fh:
        fh.write(b'{"i": 2, "to')
    for c in buf.iter_chunks(10):
        buf.commit(c.end_offset)  # drained, fragment set aside, but not cleared
    buf.append([{"i": 3}])
    assert [r["i"] for r in drain(buf)] == [3]


def test_missing_parent_folder_is_empty_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    buf = JsonlFile(blocker / "buf.jsonl")  # the parent is a regular file
    assert buf.is_empty()
    assert buf.count() == (0, 0)
    assert list(buf.iter_chunks()) == []
    try:
        buf.append([{"i": 1}])
        raise AssertionError("append under a regular file succeeded")
    except OSError:
        pass


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.binary(max_size=300)
        ),
        max_size=12,
    ),
    st.binary(max_size=300),
    st.integers(1, 64),
)
def test_tiny_blocks_and_oversized_garbage_never_hide_a_valid_line(  # type: ignore[no-untyped-def]
    tmp_path_factory, pairs, tail, block
) -> None:
    """The same property with reads of a few bytes and a line limit just above the longest valid
    line: runs of garbage longer than the limit are set aside in pieces (flat memory)."""
    path = tmp_path_factory.mktemp("o") / "buf.jsonl"
    lines = [orjson.dumps(r) for r, _ in pairs]
    path.write_bytes(
        b"".join(line + b"\n" + junk + b"\n" for line, (_, junk) in zip(lines, pairs, strict=True))
        + tail
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonl, "READ_BLOCK", block)
        longest = max(len(x) for x in [*lines, orjson.dumps({"after": True})])
        mp.setattr(jsonl, "MAX_LINE_BYTES", longest + 2)
        buf = JsonlFile(path)
        got = [r for c in buf.iter_chunks(3) for r in c.records]
        assert _is_subsequence([r for r, _ in pairs], got)
        buf.append([{"after": True}])  # after any tail, with the same limits
        assert [r for c in JsonlFile(path).iter_chunks(50) for r in c.records][-1:] == [
            {"after": True}
        ]


def test_oversized_run_without_newline_is_set_aside_in_pieces(tmp_path: Path) -> None:
    buf = JsonlFile(tmp_path / "buf.jsonl")
    huge = b"x" * 5000
    buf.path.write_bytes(b'{"i":1}\n' + huge + b'\n{"i":2}\n' + b"y" * 3000)
    reasons: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonl, "READ_BLOCK", 256)
        mp.setattr(jsonl, "MAX_LINE_BYTES", 1000)
        got = [
            r for c in buf.iter_chunks(10, on_bad=lambda n, w: reasons.append(w)) for r in c.records
        ]
        assert got == [{"i": 1}, {"i": 2}]
        assert any(w.startswith("oversized line") for w in reasons)
        assert len(buf.bad_path.read_bytes()) < 5000 + 3000  # pieces, not everything in memory
        buf.append([{"i": 3}])  # the 3,000-byte torn tail is cut, not glued to
    assert [r["i"] for r in drain(JsonlFile(buf.path), 10)] == [1, 2, 3]
