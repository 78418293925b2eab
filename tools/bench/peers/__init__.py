"""`tagstream bench loader --peers`: our loader beside FFCV, Mosaic Streaming, LitData, WebDataset and torch
DataLoaders on the same JPEG bytes, with the full-decode ceilings in the same run."""

from tagstream.tools.bench.peers.contenders import OURS_EPOCH, PEERS
from tagstream.tools.bench.peers.report import format_peers, plot_peers
from tagstream.tools.bench.peers.run import bench_peers, parse_peers

__all__ = ["OURS_EPOCH", "PEERS", "bench_peers", "format_peers", "parse_peers", "plot_peers"]
