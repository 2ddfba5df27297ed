"""Eager model -> TorchScript bytes that are the same on every machine, plus the parity check."""
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
SERIALIZATION_ID = ".data/serialization_id"
ARCHIVE_ROOT = "archive/"


class ParityError(RuntimeError):
    """The saved TorchScript does not reproduce the eager model's outputs."""


@dataclass(frozen=True)
class ParityReport:
    max_abs_error: float
    atol: float
    rtol: float
    batch_sizes: Sequence[int]


def save_reproducibly(module: torch.jit.ScriptModule, extra_files: Dict[str, str]) -> bytes:
    """torch.jit.save, minus what differs between machines (see `normalize`)."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files=extra_files)
    return normalize(buffer.getvalue())


def normalize(archive: bytes, extra_files: Optional[Dict[str, str]] = None) -> bytes:
    """Rewrite a TorchScript archive so that its bytes depend only on the model.

    The root folder becomes "archive" (torch names it after the file it saved to). The
    `.debug_pkl` records hold absolute source paths of the model code; TorchScript loads without
    them, so they are dropped and the zip rewritten with fixed timestamps, in torch's own order.
    `extra_files` are added (or replaced) as torch's `_extra_files` would. torch derives
    `.data/serialization_id` from every record it wrote, those paths included, so it is recomputed
    from the records that remain.
    """
    source = zipfile.ZipFile(io.BytesIO(archive))
    records = {}
    for entry in source.infolist():
        if not entry.filename.endswith(".debug_pkl"):
            records[ARCHIVE_ROOT + entry.filename.partition("/")[2]] = source.read(entry)
    for name, content in (extra_files or {}).items():
        records[f"{ARCHIVE_ROOT}extra/{name}"] = content.encode()
    digest = hashlib.sha256()
    for name, content in records.items():
        if not name.endswith(SERIALIZATION_ID):
            digest.update(name.encode() + b"\0" + content)
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", zipfile.ZIP_STORED) as target:
        for name, content in records.items():
            if name.endswith(SERIALIZATION_ID):
                content = str(int(digest.hexdigest(), 16))[:40].encode()  # torch's form: 40 decimal digits
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            target.writestr(info, content)
    return output.getvalue()


def archive_format_version(archive: bytes) -> int:
    """The TorchScript archive format version; older torch releases refuse newer versions."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        name = next(n for n in zipped.namelist() if n.endswith("/version") or n == "version")
        return int(zipped.read(name).decode().strip())


def load(archive: bytes) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(archive), map_location="cpu")


def read_extra_file(archive: bytes, name: str) -> dict:
    extra = {name: ""}
    torch.jit.load(io.BytesIO(archive), map_location="cpu", _extra_files=extra)
    return json.loads(extra[name])


def check_parity(
    eager: torch.nn.Module,
    archive: bytes,
    input_shape: Sequence[int],
    atol: float = 1e-4,
    rtol: float = 1e-4,
    batch_sizes: Sequence[int] = (1, 2),
) -> ParityReport:
    """Reload the saved archive and compare it with the eager model on seeded random inputs."""
    reloaded = load(archive)
    generator = torch.Generator().manual_seed(1234)
    worst = 0.0
    with torch.no_grad():
        for batch in batch_sizes:
            example = torch.randn((batch, *input_shape[1:]), generator=generator)
            expected, actual = eager(example), reloaded(example)
            if expected.shape != actual.shape:
                raise ParityError(
                    f"parity check failed at batch {batch}: eager shape {list(expected.shape)} "
                    f"!= TorchScript shape {list(actual.shape)}"
                )
            error = (expected - actual).abs()
            worst = max(worst, float(error.max()))
            if not torch.allclose(expected, actual, atol=atol, rtol=rtol):
                index = tuple(int(i) for i in (error == error.max()).nonzero()[0])
                raise ParityError(
                    f"parity check failed at batch {batch}: output{list(index)} eager={float(expected[index]):.6g} "
                    f"TorchScript={float(actual[index]):.6g} (max abs error {worst:.3g}, atol={atol}, rtol={rtol}); "
                    "the model has data-dependent control flow that tracing froze, or is not deterministic: "
                    "try recipe: script"
                )
    return ParityReport(max_abs_error=worst, atol=atol, rtol=rtol, batch_sizes=tuple(batch_sizes))
