"""Image sizes and progressive resizing: the train image size as a pure function of the epoch (FFCV's low-to-high
resolution trick).

A schedule is a tuple of (first epoch, size) pairs, written "160@0,192@2,224@4": 160 px from epoch 0,
192 from epoch 2, 224 from epoch 4 on. Because the size depends on the epoch alone, a resumed run
recomputes it and sees the same shapes; the loader rebuilds its pipeline at the epoch where it changes.

The forms an image size takes, each made here and nowhere else: the text a user writes ("224" or a schedule,
`parse_size_schedule`), the stored setting (an int for one size, the normalised text for a schedule:
`image_size_setting`), the schedule as pairs (`check_size_schedule`), the size in force at an epoch (`size_at`)
and the size a run ends at (`final_size`). `check_size` is the one rule for a single size.
"""

from __future__ import annotations

MIN_SIZE = 8
MAX_SIZE = 4096  # a crop side beyond this is a typo (1e20), not a model input: refused before anything starts

MAX_EPOCH = 1_000_000

SizeSchedule = tuple[tuple[int, int], ...]


def check_size(size: int, *, name: str = "image_size") -> int:
    """A single image size: a whole number in [MIN_SIZE, MAX_SIZE]; returns it, or raises naming `name`."""
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIZE:
        raise ValueError(f"{name}={size!r} must be a whole number of pixels >= {MIN_SIZE}")
    if size > MAX_SIZE:
        raise ValueError(f"{name}={size!r} is outside [{MIN_SIZE}, {MAX_SIZE}] (a crop side this large is a typo)")
    return size


def check_size_schedule(schedule: SizeSchedule, *, name: str = "size schedule") -> SizeSchedule:
    """The schedule as a tuple of int pairs, or ValueError naming what is wrong with it."""
    try:
        pairs = tuple((int(e), int(s)) for e, s in schedule)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}={schedule!r} must be (first epoch, size) pairs, e.g. ((0, 160), (2, 192), (4, 224))"
        ) from None
    if not pairs:
        raise ValueError(f"{name} is empty; give at least one SIZE@EPOCH entry starting at epoch 0")
    if pairs[0][0] != 0:
        raise ValueError(f"{name}={format_size_schedule(pairs)!r} must start at epoch 0 (e.g. '160@0,224@4')")
    epochs = [e for e, _ in pairs]
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError(f"{name}={format_size_schedule(pairs)!r}: epochs must strictly increase")
    bad = [s for _, s in pairs if not MIN_SIZE <= s <= MAX_SIZE]
    if bad:
        raise ValueError(f"{name}={format_size_schedule(pairs)!r}: sizes {bad} are outside [{MIN_SIZE}, {MAX_SIZE}]")
    if pairs[-1][0] > MAX_EPOCH:
        raise ValueError(f"{name}={format_size_schedule(pairs)!r}: epochs must be <= {MAX_EPOCH}")
    return pairs


def parse_size_schedule(text: str | int, *, name: str = "image_size") -> SizeSchedule:
    """ "160@0,192@2,224@4" -> ((0, 160), (2, 192), (4, 224)); a bare "224" (or 224) -> ((0, 224),)."""
    pairs = []
    for item in (p.strip() for p in str(text).split(",")):
        size, _, epoch = item.partition("@")
        try:
            pairs.append((int(epoch) if epoch else 0, int(size)))
        except ValueError:
            raise ValueError(
                f"{name}={text!r} is neither a size nor a schedule SIZE@EPOCH,... such as '160@0,192@2,224@4'"
            ) from None
    if len(pairs) == 1 and "@" not in str(text):  # a bare size: refused as one
        return ((0, check_size(pairs[0][1], name=name)),)
    return check_size_schedule(tuple(pairs), name=name)


def format_size_schedule(schedule: SizeSchedule) -> str:
    """((0, 160), (2, 192)) -> "160@0,192@2" (the form parse_size_schedule reads)."""
    return ",".join(f"{s}@{e}" for e, s in schedule)


def image_size_setting(value: str | int, *, name: str = "image_size") -> int | str:
    """A size or a schedule as a user writes it -> its stored form: an int for a single size, the normalised text
    ("160@0,192@2") for a schedule, so a saved config compares equal however it was written."""
    schedule = parse_size_schedule(value, name=name)
    return schedule[0][1] if len(schedule) == 1 else format_size_schedule(schedule)


def final_size(schedule: SizeSchedule) -> int:
    """The size a schedule ends at (its last entry's): a model's input size and the held-out evaluation's."""
    return schedule[-1][1]


def size_at(schedule: SizeSchedule, epoch: int) -> int:
    """The size in force at `epoch`: the last entry whose first epoch is <= epoch."""
    if epoch < 0:
        raise ValueError(f"epoch={epoch} must be >= 0")
    return [s for e, s in schedule if e <= epoch][-1]
