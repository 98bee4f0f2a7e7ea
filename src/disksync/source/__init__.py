"""The source: follow a Hyperliquid node's replica command log and hand out complete lines.

``layout`` knows the directory tree and the read order (pure parsing), ``framer`` cuts bytes
into lines (pure), ``files`` is one open file plus the settings, ``numbering`` turns lines into
numbered entries, ``watch`` wakes the loop on inotify events, ``tailer`` is the I/O loop that
ties them together. See docs/SOURCE.md for every edge case and what the tailer does about it.
"""

from disksync.source.files import TailerConfig, check_data_dir
from disksync.source.framer import LineFramer
from disksync.source.layout import (
    REPLICA_DIR,
    FileKey,
    LogFile,
    StartPoint,
    choose_start,
    parse_date,
    parse_height,
    parse_run_time_ns,
    scan,
)
from disksync.source.metrics import SourceMetrics
from disksync.source.tailer import Tailer

__all__ = [
    "REPLICA_DIR",
    "FileKey",
    "LineFramer",
    "LogFile",
    "SourceMetrics",
    "StartPoint",
    "Tailer",
    "TailerConfig",
    "check_data_dir",
    "choose_start",
    "parse_date",
    "parse_height",
    "parse_run_time_ns",
    "scan",
]
