"""disksync: a Hyperliquid node's replica command log as an authenticated, gap-free feed."""

from disksync.entry import Entry

__all__ = ["Entry", "__version__"]
__version__ = "0.1.0"
