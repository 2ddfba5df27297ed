"""A model.tar.gz whose bytes depend only on its contents (so the CDK asset hash does too)."""
import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import Dict, Union

Content = Union[bytes, Path]
_CHUNK = 1 << 20


def write_reproducible_tarball(destination: Path, files: Dict[str, Content]) -> None:
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
                    with open(content, "rb") as stream:
                        tar.addfile(info, stream)
                else:
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
