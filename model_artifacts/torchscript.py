"""Eager model -> TorchScript bytes that are the same on every machine, plus the parity check."""
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Dict, Sequence

import torch

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
SERIALIZATION_ID = ".data/serialization_id"


class ParityError(RuntimeError):
    """The saved TorchScript does not reproduce the eager model's outputs."""


@dataclass(frozen=True)
class ParityReport:
    max_abs_error: float
    atol: float
    rtol: float
    batch_sizes: Sequence[int]


def convert(model: torch.nn.Module, recipe: str, example: torch.Tensor) -> torch.jit.ScriptModule:
    model = model.eval()
    if recipe == "trace":
        # _store_inputs=False: torch 2.x would otherwise ship the example input inside the archive.
        return torch.jit.trace(model, example, _store_inputs=False)
    if recipe == "script":
        return torch.jit.script(model)
    raise ValueError(f"unknown recipe {recipe!r}; accepted: trace, script")


def save_reproducibly(module: torch.jit.ScriptModule, extra_files: Dict[str, str]) -> bytes:
    """torch.jit.save, minus what differs between machines.

    Saving to a buffer fixes the archive's root folder ("archive", not the file name). The
    `.debug_pkl` records hold absolute source paths of the model code; TorchScript loads without
    them, so they are dropped and the zip rewritten with fixed timestamps, in torch's own order.
    torch derives `.data/serialization_id` from every record it wrote, those paths included, so it
    is recomputed from the records that remain.
    """
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files=extra_files)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    records = [(e.filename, source.read(e)) for e in source.infolist() if not e.filename.endswith(".debug_pkl")]
    digest = hashlib.sha256()
    for name, content in records:
        if not name.endswith(SERIALIZATION_ID):
            digest.update(name.encode() + b"\0" + content)
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", zipfile.ZIP_STORED) as target:
        for name, content in records:
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
