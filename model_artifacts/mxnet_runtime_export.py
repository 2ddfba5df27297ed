"""Write the detector's model files with the serving runtime's own MXNet, after checking it answers as built.

The second of two steps (the first is model_artifacts/mxnet_export.py, which builds the graph with GluonCV in
.venv-mxnet). Run by the serving runtime's Python, as model_artifacts/build.py does:

    .venv-runtimes/eia-mxnet-1.4.1/bin/python -m model_artifacts.mxnet_runtime_export --graph DIR --out OUT

It loads DIR/model-symbol.json + DIR/model-0000.params (written by the build venv's MXNet), writes them again
with this MXNet (the symbol then records this version, and the runtime loads it without its "saved by a newer
MXNet" warning), loads the written pair the way the handler does (gluon.SymbolBlock.imports), and checks that
it answers the fixed input of DIR/parity/ with the cid, score and bbox the build network gave. Then it writes
OUT/model-symbol.json, OUT/model-0000.params and OUT/export.json (this MXNet, the parity found, the files'
sha256). On a mismatch it stops with an error that names the first output that differs.

Reproducible: the same inputs give byte-identical files (parameters are saved in name order).

It runs in the serving runtimes (Python 3.6 for the EIA image, 3.8 for the MXNet 1.9.0 one), so it stays
valid Python 3.6 and imports only mxnet, numpy and the standard library: gluoncv is not in the EIA image.
"""
import argparse
import hashlib
import json
import os
import platform
import sys

SYMBOL_FILE = "model-symbol.json"
PARAMS_FILE = "model-0000.params"
INFO_FILE = "export.json"
PARITY_DIR = "parity"
PARITY_INPUT = "input.npy"
INPUT_NAME = "data"
OUTPUT_NAMES = ("cid", "score", "bbox")
# MXNet 1.4.1 against 1.9.1 on the SSD: bbox (pixels, up to ~500) within 1e-4, scores within 1e-6.
RTOL = 1e-4
ATOL = 1e-4
# What the build records about the graph, carried into this step's record.
GRAPH_KEYS = ("model", "mxnet_version", "gluoncv_version", "weights")


class ExportError(Exception):
    pass


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m model_artifacts.mxnet_runtime_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", required=True, help="mxnet_export's output: model-symbol.json, model-0000.params, export.json, parity/")
    parser.add_argument("--out", required=True, help="directory for this MXNet's model-symbol.json, model-0000.params, export.json")
    args = parser.parse_args(argv)
    try:
        info = export(args.graph, args.out)
    except ExportError as error:
        print("error: {}".format(error), file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "mxnet_version": info["mxnet_version"], "files": info["files"]}, sort_keys=True))
    return 0


def export(graph, out):
    """Load, write again with this MXNet, check parity; returns what OUT/export.json records."""
    import mxnet as mx
    import numpy as np

    built = _read_json(os.path.join(graph, INFO_FILE))
    graph_info = dict((key, built.get(key)) for key in GRAPH_KEYS)
    built_with = built.get("mxnet_version", "?")
    example, expected = _parity_files(np, os.path.join(graph, PARITY_DIR))

    if not os.path.isdir(out):
        os.makedirs(out)
    symbol_path, params_path = os.path.join(out, SYMBOL_FILE), os.path.join(out, PARAMS_FILE)
    try:
        symbol = mx.sym.load(os.path.join(graph, SYMBOL_FILE))
        params = mx.nd.load(os.path.join(graph, PARAMS_FILE))
    except mx.base.MXNetError as error:
        raise ExportError("MXNet {} cannot read the model files MXNet {} wrote in {}: {}".format(
            mx.__version__, built_with, graph, _first_line(error)))
    symbol.save(symbol_path)
    mx.nd.save(params_path, dict((name, params[name]) for name in sorted(params)))

    try:
        block = mx.gluon.SymbolBlock.imports(symbol_path, [INPUT_NAME], params_path, ctx=mx.cpu())
        answers = [value.asnumpy() for value in block(mx.nd.array(example, ctx=mx.cpu()))]
    except mx.base.MXNetError as error:
        raise ExportError("MXNet {} cannot run the graph built by MXNet {} (an operator it lacks?): {}".format(
            mx.__version__, built_with, _first_line(error)))
    differences = _check_parity(np, mx.__version__, built_with, answers, expected)

    info = {
        "mxnet_version": mx.__version__,
        "python_version": platform.python_version(),
        "graph": graph_info,
        "parity": {
            "reference": "MXNet {} (the build venv's network)".format(built_with),
            "checked_with": mx.__version__,
            "input_shape": list(example.shape),
            "rtol": RTOL,
            "atol": ATOL,
            "max_abs_diff": differences,
        },
        "files": dict((name, _sha256(os.path.join(out, name))) for name in (SYMBOL_FILE, PARAMS_FILE)),
    }
    with open(os.path.join(out, INFO_FILE), "w") as stream:
        stream.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _parity_files(np, directory):
    try:
        example = np.load(os.path.join(directory, PARITY_INPUT), allow_pickle=False)
        expected = [np.load(os.path.join(directory, name + ".npy"), allow_pickle=False) for name in OUTPUT_NAMES]
    except (IOError, OSError, ValueError) as error:
        raise ExportError("no parity reference in {} ({}); build the graph with model_artifacts.mxnet_export".format(directory, error))
    return example, expected


def _check_parity(np, version, built_with, answers, expected):
    """{output: max |difference|}, or an ExportError naming the first output that differs."""
    differences = {}
    for name, got, want in zip(OUTPUT_NAMES, answers, expected):
        if got.shape != want.shape:
            raise ExportError("parity: MXNet {} answers {} of shape {}, MXNet {} (the build) answered {}".format(
                version, name, list(got.shape), built_with, list(want.shape)))
        close = np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
        if not close.all():
            first = tuple(int(i) for i in np.argwhere(~close)[0])
            raise ExportError(
                "parity: MXNet {} (this runtime) answers a different {} than MXNet {} (the build) for the fixed input: "
                "{} of {} values differ, first at {}: {!r} here, {!r} in the build (rtol {}, atol {}). This runtime would "
                "serve other detections than the network that was built; check the operators it runs differently".format(
                    version, name, built_with, int((~close).sum()), close.size, list(first), float(got[first]), float(want[first]),
                    RTOL, ATOL))
        finite = np.isfinite(got) & np.isfinite(want)
        differences[name] = float(np.abs(got[finite] - want[finite]).max()) if finite.any() else 0.0
    return differences


def _read_json(path):
    try:
        with open(path) as stream:
            return json.load(stream)
    except (IOError, OSError, ValueError) as error:
        raise ExportError("cannot read {} ({}); build the graph with model_artifacts.mxnet_export".format(path, error))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


if __name__ == "__main__":
    sys.exit(main())
