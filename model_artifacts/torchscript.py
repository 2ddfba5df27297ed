"""TorchScript archives whose bytes are the same on every machine. Torch-free but for loading."""
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Dict, Optional, Union

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
SERIALIZATION_ID = ".data/serialization_id"
ARCHIVE_ROOT = "archive/"


def normalize(source: Path, destination: Path, extra_files: Optional[Dict[str, str]] = None) -> None:
    """Rewrite a TorchScript archive so that its bytes depend only on the model.

    The root folder becomes "archive" (torch names it after the file it saved to). The
    `.debug_pkl` records hold absolute source paths of the model code; TorchScript loads without
    them, so they are dropped and the zip rewritten with fixed timestamps, in torch's own order.
    `extra_files` are added (or replaced) as torch's `_extra_files` would. torch derives
    `.data/serialization_id` from every record it wrote, those paths included, so it is recomputed
    from the records that remain. Records are streamed one at a time: a large model is never held
    in memory whole.
    """
    extras = {f"{ARCHIVE_ROOT}extra/{name}": content.encode() for name, content in (extra_files or {}).items()}
    with zipfile.ZipFile(source) as archive:
        entries = [(ARCHIVE_ROOT + e.filename.partition("/")[2], e) for e in archive.infolist() if not e.filename.endswith(".debug_pkl")]
        entries = [(name, e) for name, e in entries if name not in extras]
        digest = hashlib.sha256()
        for name, entry in entries:
            if not name.endswith(SERIALIZATION_ID):
                digest.update(name.encode() + b"\0" + archive.read(entry))
        for name, content in extras.items():
            digest.update(name.encode() + b"\0" + content)
        with zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as target:
            for name, entry in entries:
                content = archive.read(entry)
                if name.endswith(SERIALIZATION_ID):
                    content = str(int(digest.hexdigest(), 16))[:40].encode()  # torch's form: 40 decimal digits
                _write_record(target, name, content)
            for name, content in extras.items():
                _write_record(target, name, content)


def _write_record(target: zipfile.ZipFile, name: str, content: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.external_attr = 0o644 << 16
    target.writestr(info, content)


def archive_format_version(archive: Path) -> int:
    """The TorchScript archive format version; older torch releases refuse newer versions."""
    with zipfile.ZipFile(archive) as zipped:
        name = next(n for n in zipped.namelist() if n.endswith("/version") or n == "version")
        return int(zipped.read(name).decode().strip())


def load(archive: Union[bytes, Path]):
    import torch  # only tests and tools load archives; the build itself never imports torch

    return torch.jit.load(io.BytesIO(archive) if isinstance(archive, bytes) else str(archive), map_location="cpu")


def read_extra_file(archive: Union[bytes, Path], name: str) -> dict:
    import torch

    extra = {name: ""}
    torch.jit.load(io.BytesIO(archive) if isinstance(archive, bytes) else str(archive), map_location="cpu", _extra_files=extra)
    return json.loads(extra[name])
