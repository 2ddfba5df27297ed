"""Eager model -> TorchScript bytes that are the same on every machine, plus the parity check."""
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

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


def save_reproducibly(module: torch.jit.ScriptModule, destination: Path, extra_files: Dict[str, str]) -> None:
    """torch.jit.save to `destination`, minus what differs between machines (see `normalize`)."""
    raw = destination.with_name(destination.name + ".raw")
    torch.jit.save(module, str(raw), _extra_files=extra_files)
    try:
        normalize(raw, destination)
    finally:
        raw.unlink()


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


def load(archive: Union[bytes, Path]) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(archive) if isinstance(archive, bytes) else str(archive), map_location="cpu")


def read_extra_file(archive: Union[bytes, Path], name: str) -> dict:
    extra = {name: ""}
    torch.jit.load(io.BytesIO(archive) if isinstance(archive, bytes) else str(archive), map_location="cpu", _extra_files=extra)
    return json.loads(extra[name])


def check_parity(
    eager: torch.nn.Module,
    archive: Path,
    input_shape: Sequence[int],
    atol: float = 1e-4,
    rtol: float = 1e-4,
    batch_sizes: Sequence[int] = (1, 2),
    dtype: torch.dtype = torch.float32,
    recipe: str = "trace",
) -> ParityReport:
    """Reload the saved archive and compare it with the eager model on seeded random inputs."""
    from model_artifacts.runtime_export import served_form

    reloaded = served_form(load(archive), recipe)
    generator = torch.Generator().manual_seed(1234)
    worst = 0.0
    with torch.no_grad():
        for batch in batch_sizes:
            example = torch.randn((batch, *input_shape[1:]), generator=generator).to(dtype)
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
