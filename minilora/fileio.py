"""Writes that a crash cannot leave half done: one file, or several files that appear at once.

A file is written to a temporary name beside its target, flushed to disk, and renamed over the
target: a rename within one folder is atomic, so a reader sees the old file or the new one.
Several files (an adapter's weights and config) go into a fresh folder beside the target folder,
which is then swapped with the target in one step (Linux's ``renameat2(RENAME_EXCHANGE)``), so
a reader never sees new weights under an old config. Everything else the target folder held is
hard-linked into the new folder first, so nothing the user kept there is lost.

Files get the mode a plain ``open(path, "w")`` gives (0666 less the umask, usually 0644), not
the 0600 of ``tempfile.mkstemp``: an adapter is meant to be shared.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _umask() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return mask


def _write_temporary(folder: Path, name: str, data: bytes) -> Path:
    """``data`` in a new file of ``folder`` with a hidden temporary name, flushed to disk."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (the folder's entry list is data too)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (its folder created if needed): the old file or the new one,
    never a part of either."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temporary(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step; False where the OS or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a libc without it (glibc < 2.28)
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # this file system cannot swap
        return False
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst, follow_symlinks=False)


def atomic_write_files(directory: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Put ``files`` (name -> bytes) into ``directory`` so that they all appear at once.

    The new files and links to everything else ``directory`` holds go into a fresh folder
    beside it, which then takes its place in one swap; the old folder is removed after. A save
    killed at any point leaves the old set or the new one; its leftover folder (hidden, named
    after ``directory``) is removed by the next save. Another process writing into
    ``directory`` during the save may lose that write. Where the OS cannot swap two folders
    (not Linux), the files are replaced one by one, each atomically.
    """
    target = Path(os.path.realpath(directory))  # a link to a folder: the folder it names
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.save-"
    for stale in target.parent.glob(prefix + "*"):  # a killed save's folder: old or unused new
        shutil.rmtree(stale, ignore_errors=True)
    fresh = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))
    try:
        if target.exists():
            for entry in os.scandir(target):
                if entry.name in files:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.copytree(entry.path, fresh / entry.name, symlinks=True,
                                    copy_function=_link_or_copy)
                else:
                    _link_or_copy(entry.path, str(fresh / entry.name))
            os.chmod(fresh, target.stat().st_mode & 0o7777)
        else:
            os.chmod(fresh, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the folder
        for name, data in files.items():
            os.replace(_write_temporary(fresh, name, data), fresh / name)
        _fsync_folder(fresh)
        if not target.exists():
            os.rename(fresh, target)
        elif not _exchange(fresh, target):
            for name, data in files.items():
                atomic_write(target / name, data)
        _fsync_folder(target.parent)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)  # now the old folder, or the unused new one
    return target
