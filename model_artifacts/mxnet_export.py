"""Export the GluonCV SSD detector as the MXNet symbol + params pair the MXNet serving handler loads.

Runs in the MXNet environment (`make setup-mxnet`; MXNet needs numpy<1.24, so it cannot live in .venv):

    .venv-mxnet/bin/python -m model_artifacts.mxnet_export --model ssd_512_mobilenet1.0_coco --out DIR [--weights PARAMS]

writes DIR/model-symbol.json + DIR/model-0000.params (`net.export(DIR/"model")`, the names the SageMaker
MXNet toolkit and inference_src/mxnet_ssd/inference.py expect), DIR/export.json (what was built, for the
build step and for people) and DIR/parity/ (a fixed input and the network's cid, score and bbox for it, as
.npy files).

This is the first of two steps. The serving runtime's own MXNet (1.4.1 in the EIA image, 1.9.0 in the others;
gluoncv is not in the EIA image and does not need to be) then loads this pair, checks that it answers what
parity/ holds, and writes the files the endpoint loads: model_artifacts/mxnet_runtime_export.py, run by
model_artifacts/build.py in the runtime's venv (runtimes/).

Weights. Without --weights the network gets random weights from a fixed seed (finite answers, see
_initialize): the artifact is real in every other respect (graph, shapes, operators, file names) but
detects nothing. Nothing is downloaded (an endpoint
and this build run without a model hub). For real detections pass the GluonCV COCO weights, fetched once on a
machine with internet access:

    import gluoncv
    net = gluoncv.model_zoo.get_model("ssd_512_mobilenet1.0_coco", pretrained=True)
    net.save_parameters("ssd_512_mobilenet1.0_coco.params")

(or take the file get_model leaves in ~/.mxnet/models/), then `--weights ssd_512_mobilenet1.0_coco.params`.

Reproducible: the same inputs give byte-identical files (the symbol's process-specific initializer names
are normalized here; MXNet's params file holds nothing variable).
"""
import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

# The file contract between the two steps lives in the runtime's step (Python 3.6-valid, stdlib imports only): the
# pair, export.json, and the fixed input with the network's answers to it (parity/, .npy files that numpy 1.14, the
# MXNet 1.4.1 runtime's, reads as written here).
from model_artifacts.mxnet_runtime_export import INFO_FILE, OUTPUT_NAMES, PARAMS_FILE, PARITY_DIR, PARITY_INPUT, SYMBOL_FILE

MODELS = ("ssd_512_mobilenet1.0_coco",)
SEED = 0
DEFAULT_SHORT = 512  # the training size of the *_512_* detectors; the handler's default "short"
MAX_SIZE = 1024  # gluoncv's transform_test default for the long side
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PREFIX = "model"  # net.export's prefix: SYMBOL_FILE and PARAMS_FILE
# What MXNet writes into the symbol that differs from process to process: the repr (with its memory address)
# of each weight's initializer, and id() in the initializer names of constants (the SSD anchors). Neither is
# read when the parameters come from the params file, as they do in the handler.
_VOLATILE = ((re.compile(rb" object at 0x[0-9a-fA-F]+>"), rb" object>"), (re.compile(rb'"(Constant_[^"]*)_[0-9]+"'), rb'"\1"'))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_artifacts.mxnet_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=MODELS, help="GluonCV model zoo name")
    parser.add_argument("--out", required=True, type=Path, help="directory for model-symbol.json, model-0000.params, export.json")
    parser.add_argument("--weights", type=Path, help="a .params file saved by net.save_parameters (default: random weights, seed 0)")
    args = parser.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file")
    info = export(args.model, args.out, args.weights)
    print(json.dumps({"out": str(args.out), **{name: info["files"][name] for name in (SYMBOL_FILE, PARAMS_FILE)}}))
    return 0


def export(model: str, out: Path, weights: Path = None) -> dict:
    """Build, (optionally) load weights, run once, export; returns what export.json records."""
    sys.modules.setdefault("torch", None)  # gluoncv imports torch when it can; this build needs none of it
    import mxnet as mx
    import numpy as np
    from gluoncv import model_zoo

    mx.random.seed(SEED)
    np.random.seed(SEED)
    net = model_zoo.get_model(model, pretrained=False, pretrained_base=False)
    # The graph gluoncv builds for pretrained=True: box decoding from basic operators, not
    # _contrib_box_decode, which MXNet 1.4.1 and 1.5.1 (two of the three EIA runtimes) lack.
    net.bbox_decoder._minimal_opset = True
    if weights is None:
        _initialize(mx, net)
    else:
        try:
            net.load_parameters(str(weights), ctx=mx.cpu())
        except (AssertionError, ValueError, mx.base.MXNetError) as error:
            raise SystemExit(f"--weights {weights}: not {model} parameters saved by net.save_parameters ({_first_line(error)})")
    net.hybridize()

    example = mx.nd.array(np.random.RandomState(SEED).uniform(-2, 2, (1, 3, DEFAULT_SHORT, DEFAULT_SHORT)).astype("float32"))
    outputs = [output.asnumpy() for output in net(example)]
    out.mkdir(parents=True, exist_ok=True)
    net.export(str(out / PREFIX), epoch=0)
    symbol = out / SYMBOL_FILE
    symbol.write_bytes(_without_volatile(symbol.read_bytes()))

    _check_exported(mx, out, example, outputs)
    _write_parity(np, out / PARITY_DIR, example.asnumpy(), outputs)
    info = {
        "model": model,
        "mxnet_version": mx.__version__,
        "gluoncv_version": _distribution_version("gluoncv"),
        "weights": _weights_info(weights),
        "input": {"name": "data", "layout": "NCHW", "dtype": "float32", "short_default": DEFAULT_SHORT, "max_size": MAX_SIZE,
                  "mean": list(MEAN), "std": list(STD)},
        "classes": len(net.classes),
        "class_names": list(net.classes),
        "outputs": OUTPUT_NAMES,
        "output_shapes": {name: list(value.shape) for name, value in zip(OUTPUT_NAMES, outputs)},
        "example_input_shape": list(example.shape),
        "operators": sorted({node["op"] for node in json.loads(symbol.read_text())["nodes"]} - {"null"}),
        "files": {name: _sha256(out / name) for name in (SYMBOL_FILE, PARAMS_FILE)},
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _initialize(mx, net) -> None:
    """Random weights that keep activations finite: BatchNorm as identity, He-normal convolutions.

    net.initialize() alone gives the parameters that have no initializer of their own (the extra
    layers' BatchNorm statistics among them) uniform noise around 0: variances near or below zero
    blow the activations up to inf and NaN, and MXNet versions disagree on what to answer then.
    """
    ones, zeros = r".*(gamma|running_var|moving_var)$", r".*(beta|running_mean|moving_mean|bias)$"
    net.collect_params(ones).initialize(mx.init.One(), ctx=mx.cpu())
    net.collect_params(zeros).initialize(mx.init.Zero(), ctx=mx.cpu())
    rest = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    net.collect_params(f"(?!{ones}|{zeros})").initialize(rest, ctx=mx.cpu())  # parameters with their own init keep it


def _check_exported(mx, out: Path, example, expected) -> None:
    """The exported pair, loaded the way the handler loads it, answers what the network answered."""
    import numpy as np

    block = mx.gluon.SymbolBlock.imports(str(out / SYMBOL_FILE), ["data"], str(out / PARAMS_FILE), ctx=mx.cpu())
    for name, got, want in zip(OUTPUT_NAMES, block(example), expected):
        if not np.isfinite(want).all():
            print(f"warning: the network answers non-finite {name} values for the example input; check the weights", file=sys.stderr)
        if not np.allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-5, equal_nan=True):
            raise SystemExit(f"the exported model answers a different {name} than the network it came from")


def _write_parity(np, directory: Path, example, outputs) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(str(directory / PARITY_INPUT), example, allow_pickle=False)
    for name, value in zip(OUTPUT_NAMES, outputs):
        np.save(str(directory / f"{name}.npy"), value, allow_pickle=False)


def _without_volatile(text: bytes) -> bytes:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def _weights_info(weights: Path) -> dict:
    if weights is None:
        return {"source": "random", "seed": SEED, "init": "BatchNorm identity, He-normal convolutions"}
    return {"source": "file", "file": weights.name, "sha256": _sha256(weights)}


def _distribution_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)  # gluoncv 0.10.5.post0 reports __version__ "0.11.0"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


if __name__ == "__main__":
    sys.exit(main())
