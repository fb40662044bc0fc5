"""ImageFolder data identified by content: every image's digest (its size and sampled bytes),
its header checked before anything trains, and a val split that repeats training images refused.

A digest reads at most three SAMPLE-byte pieces of a file (start, middle, end; a file of up
to 3 x SAMPLE bytes whole), so a tree of a million images is identified in one read of a few
kilobytes each. Digests are cached by file (device and inode: a path through a link is the
file it reads) with its size, mtime and ctime, and header checks by digest, in a small SQLite
file in the user's cache folder (`cache_file`): a second load of the same tree reads no
image, and a copy of it (`cp -r`, rsync without times: new times, same bytes) is read once,
found to be the same data (its runs resume) and not checked again. Without a writable cache
folder everything works, only slower.
"""

import hashlib
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import RoadmapError
from .dataset import FolderScan
from .image import check_image

SAMPLE = 8192
CHECKS = 1  # bump when check_image's rules change: cached verdicts of older rules are not used


def cache_file() -> Path:
    """$XDG_CACHE_HOME/roadmap/images.sqlite (default ~/.cache/roadmap/images.sqlite)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "roadmap" / "images.sqlite"


def _read_sampled(path: str, size: int) -> Tuple[str, bytes]:
    """(digest, the file's last bytes): blake2b of the size and the sampled bytes."""
    h = hashlib.blake2b(str(size).encode() + b"\0", digest_size=16)
    with open(path, "rb") as f:
        if size <= 3 * SAMPLE:
            data = f.read()
            h.update(data)
            return h.hexdigest(), data[-64:]
        for offset in (0, (size - SAMPLE) // 2, size - SAMPLE):
            f.seek(offset)
            piece = f.read(SAMPLE)
            h.update(piece)
    return h.hexdigest(), piece[-64:]


def full_digest(path: str) -> str:
    """blake2b of every byte: confirms that two files with one sampled digest are one file."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Cache:
    """The digests and passed header checks of earlier loads; a no-op when it cannot be used
    (no writable cache folder, a locked or damaged file): it only saves reading."""

    def __init__(self, path: Optional[Path] = None):
        self.db = None
        with suppress(OSError, sqlite3.Error):
            path = path or cache_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), timeout=30)
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (file TEXT PRIMARY KEY, stat TEXT NOT NULL, digest TEXT NOT NULL)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS checked (digest TEXT NOT NULL, rules INTEGER NOT NULL)")
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS checked_key ON checked (digest, rules)")
            self.db = db

    def digests(self, files: Sequence[str], stats: Sequence[str]) -> Dict[str, str]:
        """The cached digest of each file whose size and times are unchanged."""
        if self.db is None:
            return {}
        found = {}
        with suppress(sqlite3.Error):
            want = dict(zip(files, stats))
            for i in range(0, len(files), 500):
                chunk = list(files[i : i + 500])
                rows = self.db.execute(
                    f"SELECT file, stat, digest FROM files WHERE file IN ({','.join('?' * len(chunk))})", chunk
                )
                found.update({p: d for p, s, d in rows if want.get(p) == s})
        return found

    def checked(self, digests: Sequence[str]) -> set:
        if self.db is None:
            return set()
        done = set()
        with suppress(sqlite3.Error):
            unique = sorted(set(digests))
            for i in range(0, len(unique), 500):
                chunk = unique[i : i + 500]
                rows = self.db.execute(
                    f"SELECT digest FROM checked WHERE rules = ? AND digest IN ({','.join('?' * len(chunk))})",
                    [CHECKS, *chunk],
                )
                done.update(d for (d,) in rows)
        return done

    def save(self, files: List[Tuple[str, str, str]], checked: List[str]):
        if self.db is None or not (files or checked):
            return
        with suppress(sqlite3.Error), self.db:
            self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", files)
            self.db.executemany("INSERT OR IGNORE INTO checked VALUES (?, ?)", [(d, CHECKS) for d in checked])

    def close(self):
        if self.db is not None:
            self.db.close()


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def identify(scans: Sequence[FolderScan], cache: Optional[Cache] = None) -> List[FolderScan]:
    """`scans` with every image's content digest, every image's header checked (in parallel,
    each digest once, cached): one unreadable image is one RoadmapError, before training,
    naming it and the fix (remove or replace it, rerun the same command)."""
    from dataclasses import replace

    owned = cache is None
    cache = Cache() if cache is None else cache
    try:
        paths = [p for s in scans for p, _ in s.samples]
        files = [f"{st[4]}:{st[3]}" for s in scans for st in s.stats]  # device:inode, whatever its path
        stats = [f"{st[0]} {st[1]} {st[2]}" for s in scans for st in s.stats]
        sizes = [st[0] for s in scans for st in s.stats]
        known = cache.digests(files, stats)
        todo = [i for i, f in enumerate(files) if f not in known]
        tails: Dict[int, bytes] = {}
        with ThreadPoolExecutor(_workers()) as pool:
            read = pool.map(lambda i: _read_sampled(paths[i], sizes[i]), todo)
            for i, (digest, tail) in zip(todo, _named(read, paths, todo)):
                known[files[i]], tails[i] = digest, tail
            digests = [known[f] for f in files]
            passed = cache.checked(digests)
            first = {}  # one check per digest
            for i, d in enumerate(digests):
                if d not in passed and d not in first:
                    first[d] = i
            verdicts = pool.map(lambda i: check_image(paths[i], tails.get(i)), first.values())
            bad = [(i, why) for i, why in zip(first.values(), verdicts) if why]
        failed = {i for i, _ in bad}
        cache.save(
            [(files[i], stats[i], known[files[i]]) for i in todo],
            [digests[i] for i in first.values() if i not in failed],
        )
    finally:
        if owned:
            cache.close()
    if bad:
        _refuse(bad, [p for s in scans for p, _ in s.samples])
    out, at = [], 0
    for s in scans:
        out.append(replace(s, digests=tuple(digests[at : at + len(s.samples)])))
        at += len(s.samples)
    return out


def _named(results, paths, todo):
    """`results` of reading paths[todo[k]], an OSError turned into one line naming the file."""
    it = iter(results)
    for i in todo:
        try:
            yield next(it)
        except OSError as e:
            raise RoadmapError(f"{paths[i]}: cannot read it ({e.strerror or e})") from None


def _refuse(bad: List[Tuple[int, str]], shown: List[str]):
    i, why = bad[0]
    more = ""
    if len(bad) > 1:
        names = ", ".join(shown[j] for j, _ in bad[1:4])
        more = f" (and {len(bad) - 1} more: {names}{', ...' if len(bad) > 4 else ''})"
    raise RoadmapError(
        f"{shown[i]}: cannot read this image ({' '.join(why.split())}){more}; nothing has trained: "
        "remove or replace it, then rerun the same command"
    )


def check_no_overlap(train: FolderScan, val: FolderScan, val_name: str):
    """Refuse a val split holding any of train's images, byte for byte (a digest match is
    confirmed by reading both files whole), with the count: scoring on them would report
    memorization as accuracy. A file copied with new times or names is still a copy."""
    by_digest = {}
    for (p, _), d in zip(train.samples, train.digests):
        by_digest.setdefault(d, p)
    shared, example = 0, None
    for (p, _), d, st in zip(val.samples, val.digests, val.stats):
        twin = by_digest.get(d)
        if twin is None:
            continue
        if st[0] > 3 * SAMPLE and full_digest(p) != full_digest(twin):
            continue  # same sampled bytes, other content
        shared += 1
        example = example or (p, twin)
    if not shared:
        return
    root = os.path.dirname(train.root.rstrip(os.sep))
    rel = lambda p: os.path.relpath(p, root)
    if shared == len(val.samples) == len(train.samples):
        raise RoadmapError(
            f"{root}: {val_name}/ holds the same files as train/ (all {shared} images): the run would "
            f"train and score on one set; give {val_name}/ its own images"
        )
    raise RoadmapError(
        f"{root}: {val_name}/ shares {shared} of its {len(val.samples)} images with train/ (byte for "
        f"byte, e.g. {rel(example[0])} = {rel(example[1])}): the run would score on images it trained "
        f"on; remove them from {val_name}/ or give {val_name}/ its own images"
    )
