"""`tagstream bench loader DATASET`: our DALI loader vs DataLoader + Pillow vs the decode-only ceiling; with
--peers, vs FFCV, Mosaic Streaming, LitData, WebDataset and DataLoaders, with the full-decode ceilings."""

from __future__ import annotations

import json

import click


@click.command("loader")
@click.argument("dataset", type=click.Path(file_okay=False))
@click.option(
    "--make", type=int, default=None, help="If DATASET does not exist, first generate N photo-like 500x375 JPEGs there."
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=None, help="Worker processes for every contender [default: all cores].")
@click.option("--threads", type=int, default=None, help="DALI native threads [default: all cores].")
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option(
    "--batches", type=int, default=20, show_default=True, help="Timed batches per contender (after one warm-up batch)."
)
@click.option(
    "--startup", is_flag=True, help="Also time the first batch on tiny-image datasets of 10^4 and 10^6 images."
)
@click.option(
    "--startup-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the start-up datasets live [default: next to DATASET].",
)
@click.option(
    "--antialias/--no-antialias",
    default=True,
    show_default=True,
    help="Our train resize: antialiased linear (like the Pillow baseline) or plain bilinear (faster).",
)
@click.option(
    "--rounds",
    type=int,
    default=3,
    show_default=True,
    help="Interleaved rounds of every contender; figures are medians (a shared machine is noisy).",
)
@click.option(
    "--feed",
    is_flag=True,
    help="Only the GPU path's CPU side (plan, record read, crop window, hand-off to DALI; no decode): the batch "
    "source vs the per-sample source before it and DALI's own share, in samples/s per core and CPU us a "
    "sample by process; then first reads in a fresh process (needs 14 batches of images).",
)
@click.option(
    "--remote",
    is_flag=True,
    help="Only our loader, from local disk vs from s3:// (a local S3 server, moto) with a cold and a warm cache.",
)
@click.option(
    "--peers",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[LIST|all]",
    help="Only the peer comparison: ours vs ffcv,streaming,litdata,webdataset,dataloader,torchvision (or all, "
    "the default of a bare --peers) and the full-decode ceilings (Pillow, libjpeg-turbo, torchvision), each in "
    "its own process; peers not installed are skipped with the reason (pip install 'tagstream[peers]').",
)
@click.option(
    "--peers-cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the peers' copies of the dataset are written once [default: DATASET-peers beside it].",
)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="With --peers: also draw the table (PNG).")
@click.option(
    "--soak",
    is_flag=True,
    help="Only our loader, long: --batches batches over 3 epochs with each CPU decoder, memory (RSS, PSS), open files, "
    "threads and /dev/shm of it and its workers read every 1 % of the run; then its exits (normal close, SIGINT, "
    "SIGKILL of a worker): nothing may be left, and the dead worker must be named. Exits 1 if an exit check fails.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_loader(
    dataset,
    make,
    batch_size,
    workers,
    threads,
    image_size,
    batches,
    startup,
    startup_root,
    antialias,
    rounds,
    feed,
    remote,
    peers,
    peers_cache,
    plot,
    soak,
    as_json,
):
    """Compare our loader (CPU: the workers decode the crop window and resize, and the same loader
    with DALI's CPU decoder; also GPU where present) with a torch DataLoader + Pillow baseline doing
    the same crops and flips with the same workers, and with the decode-only ceiling (the same bytes
    fully decoded with every core, by the fastest of DALI, Pillow and libjpeg-turbo), in one run of
    interleaved rounds; prints median images/s, the ratios and a per-stage breakdown.

    With --remote, the dataset is pushed to a local S3 server and read back through the object-storage
    path (loader/data/cache.py): cold cache, warm cache and local disk in one run, and the download rate a
    rank needs at 3,000 images/s.

    With --peers, our loader (the public API) beside the peers that are installed, on the same JPEG bytes
    written once into each peer's format, with the same RandomResizedCrop + flip, uint8 batches and
    workers, and the full-decode ceilings, in interleaved rounds: images/s (median and per round), the
    ratio to ours, CPU ms per image, peak PSS, and our pixels against torchvision's.

    With --soak, only our loader over a long run per CPU decoder: whether memory, open files and /dev/shm stay
    flat, and whether it exits cleanly on close, on SIGINT and when a worker is killed.

    With --feed, only the GPU path's CPU side: what the trainer's cores spend to feed nvJPEG (goal:
    >= 50,000 samples/s per core, <= 10 us a sample in the main process), beside the per-sample source,
    the same graph replaying one batch (DALI's own share), and records a fresh process never read.

    \b
    Example:
      tagstream bench loader /tmp/benchds --make 1500 --batch-size 64 --batches 20
      tagstream bench loader /tmp/benchds --startup --json
      tagstream bench loader /tmp/benchds --make 4096 --feed --batch-size 256 --batches 100
      tagstream bench loader /tmp/benchds --make 1500 --remote
      tagstream bench loader /tmp/peerds --make 3000 --peers all --batch-size 256 --workers 2 --plot peers.png
      tagstream bench loader /tmp/benchds --make 1500 --soak --batches 3000 --batch-size 32 --image-size 128
    """
    from tagstream.loader import progress_bar
    from tagstream.tools.bench.loader import bench_loader as run
    from tagstream.tools.bench.loader import format_table, usable_cores
    from tagstream.tools.bench.loader_feed import bench_feed_dataset, format_feed

    cores = usable_cores()
    bars = []

    def progress(label: str, total: int):
        """A tick whose bar starts at the first tick: its rate and time leave out the contender's start-up."""

        mine: list = []

        def tick(n: int) -> None:
            if not mine:
                mine.append(progress_bar(total=total, desc=label, unit="it", leave=False, disable=as_json))
                bars.append(mine[0])
            mine[0].update(n)
            if mine[0].n >= total:  # done: its time is this contender's, not the rest of the bench's
                mine[0].close()

        return tick

    try:
        if peers:
            from tagstream.tools.bench.peers import bench_peers, format_peers, parse_peers, plot_peers

            result = bench_peers(
                dataset,
                make=make,
                peers=parse_peers(peers),
                batch_size=batch_size,
                workers=workers or cores,
                image_size=image_size,
                rounds=rounds,
                cache=peers_cache,
                progress=progress,
                echo=lambda line: click.echo(line, err=True),
            )
            if plot:
                result["plot"] = str(plot_peers(result, plot))
        elif soak:
            from tagstream.tools.bench.loader_soak import format_soak, soak_loader

            result = soak_loader(
                dataset,
                make=make,
                batches=batches,
                batch_size=batch_size,
                workers=workers or cores,
                threads=threads or cores,
                image_size=image_size,
                progress=progress,
            )
        elif remote:
            from tagstream.tools.bench.loader_remote import bench_remote, format_remote

            result = bench_remote(
                dataset,
                make=make,
                batch_size=batch_size,
                workers=workers or cores,
                threads=threads or cores,
                image_size=image_size,
                batches=batches,
                rounds=rounds,
                progress=progress,
            )
        elif feed:
            result = bench_feed_dataset(
                dataset,
                make=make,
                batch_size=batch_size,
                workers=workers or cores,
                image_size=image_size,
                batches=batches,
                rounds=rounds,
                progress=progress,
            )
        else:
            result = run(
                dataset,
                make=make,
                batch_size=batch_size,
                workers=workers or cores,
                threads=threads or cores,
                image_size=image_size,
                batches=batches,
                startup=startup,
                startup_root=startup_root,
                antialias=antialias,
                rounds=rounds,
                progress=progress,
            )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    finally:
        for bar in bars:
            bar.close()
    if peers:
        click.echo(json.dumps(result, indent=2) if as_json else format_peers(result))
        return
    if soak:
        click.echo(json.dumps(result, indent=2) if as_json else format_soak(result))
        if not result["exits_ok"]:
            raise SystemExit(1)
        return
    if remote:
        click.echo(json.dumps(result, indent=2) if as_json else format_remote(result))
        return
    click.echo(json.dumps(result, indent=2) if as_json else (format_feed if feed else format_table)(result))
