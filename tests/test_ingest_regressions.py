"""Regression tests at the ingest / journal edge: a value the journal cannot store must be a
``JournalError`` (which ``serve`` reports), never a bare ``OverflowError``; each failed on the
code before its fix. Real SQLite journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from disksync.entry import Entry
from disksync.errors import JournalError
from disksync.journal import open_journal


@pytest.mark.parametrize("seq", [2**63, 18_446_744_073_709_551_615])
async def test_seq_beyond_64_bits_is_a_journal_error_and_the_journal_goes_on(
    tmp_path: Path, seq: int
) -> None:
    journal = open_journal(f"sqlite:{tmp_path / 'j.sqlite'}")
    try:
        with pytest.raises(JournalError, match="64-bit"):
            await journal.append([Entry(seq, b"{}", 0, 0)])
        with pytest.raises(JournalError, match="64-bit"):
            await journal.read(seq, 1)
        await journal.append([Entry(1, b"{}", 0, 0)])  # nothing half-written is left behind
        assert [e.seq for e in await journal.read(0, 10)] == [1]
    finally:
        await journal.close()
