"""What this process has mapped, read from /proc/self/smaps (Linux): for the tests that check a reader hands its
shard pages back, in this process or in a child started for a clean count."""

from __future__ import annotations

from typing import Callable


def mapped_rss(match: Callable[[str], bool]) -> int:
    """Bytes resident in this process of the maps whose file path `match` accepts (each map's own Rss line)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a map's header line
                inside = len(head) >= 6 and match(head[5])  # range perms offset dev inode [path]
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total
