"""The jobs around the loader: one sub-package per job (cli, convert, vocab, dedup, inspection, verify,
synth, bench, demo); `cli/` holds only the thin click commands."""
