"""A model.tar.gz whose bytes depend only on its contents (so the CDK asset hash does too)."""
import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import Callable, Dict, Optional, Union

Content = Union[bytes, Path]
_CHUNK = 1 << 20


class _Counting(io.RawIOBase):
    """A read-only stream that reports how many bytes were read (for a compression progress bar)."""

    def __init__(self, stream, on_bytes: Callable[[int], None]):
        self.stream, self.on_bytes = stream, on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        self.on_bytes(len(data))
        return len(data)


def write_reproducible_tarball(destination: Path, files: Dict[str, Content], on_bytes: Optional[Callable[[int], None]] = None) -> None:
    """Write `files` (archive name -> bytes or a path to stream from) as a deterministic tar.gz.

    Sorted entries, mtime 0, uid/gid 0 with no user names, fixed modes; gzip with mtime 0 and no
    file name in its header. Paths are streamed, so a large model.pt is never held twice in memory.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(files):
                content = files[name]
                info = tarfile.TarInfo(name)
                info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
                if isinstance(content, Path):
                    info.size = content.stat().st_size
                    stream = open(content, "rb")
                else:
                    info.size = len(content)
                    stream = io.BytesIO(content)
                with stream:
                    tar.addfile(info, _Counting(stream, on_bytes) if on_bytes else stream)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
