"""``disksync latency``'s core: per-command records (``record``) and the measurement loop over
one feed per URL (``measure``). See docs/INDEX.md, "disksync latency"."""
