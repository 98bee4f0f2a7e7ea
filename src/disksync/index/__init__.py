"""``disksync index``'s core: the tables (``tables``), decoded blocks to rows (``rows``) and the
loop that batches entries into a sink, exactly once (``indexer``). See docs/INDEX.md."""
