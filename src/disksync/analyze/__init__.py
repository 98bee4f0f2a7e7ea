"""``disksync analyze``'s core: protocol statistics over a stream of blocks (``stats``) and
their report (``report``). See docs/INDEX.md, "disksync analyze"."""
