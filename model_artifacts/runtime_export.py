"""Convert a model to TorchScript with the serving runtime's own torch, inside its own image.

The EIA runtimes are torch 1.3.1 / 1.5.1 on Python 3.6: they refuse archives that a newer torch
writes. The pipeline runs this module in the runtime's Deep Learning Container image, then the
regular build (`python -m model_artifacts build --runtime-export DIR`) packages the result.
So this file stays valid Python 3.6 and imports only torch and the example models.

    python -m model_artifacts.runtime_export --model example-resnet --recipe script \\
        --input-shape 1 3 224 224 --out build/runtime-export/image-classifier
"""
import argparse
import inspect
import json
import os
import sys

import torch

from model_artifacts.example_models import build_example_model

EXPORTED_MODEL_FILE = "model.pt"
EXPORT_INFO_FILE = "export.json"


def convert(model, recipe, example):
    if recipe == "trace":
        # torch 2.x stores the example input in the archive unless told not to; 1.x has no such option.
        options = {"_store_inputs": False} if "_store_inputs" in inspect.signature(torch.jit.trace).parameters else {}
        return torch.jit.trace(model, example, **options)
    if recipe == "script":
        return torch.jit.script(model)
    raise ValueError("unknown recipe {!r}; accepted: trace, script".format(recipe))


def max_abs_difference(model, module, input_shape):
    generator = torch.Generator().manual_seed(1234)
    example = torch.randn([2] + list(input_shape[1:]), generator=generator)
    with torch.no_grad():
        return float((model(example) - module(example)).abs().max())


def export(model_name, recipe, input_shape, out_dir, atol=1e-4):
    model = build_example_model(model_name).eval()
    module = convert(model, recipe, torch.zeros(input_shape))
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    path = os.path.join(out_dir, EXPORTED_MODEL_FILE)
    torch.jit.save(module, path)
    error = max_abs_difference(model, torch.jit.load(path, map_location="cpu"), input_shape)
    if error > atol:
        raise SystemExit("runtime export failed the parity check: max abs error {:.3g} > {}".format(error, atol))
    info = {
        "model": model_name,
        "recipe": recipe,
        "input_shape": list(input_shape),
        "torch_version": torch.__version__.split("+")[0],
        "max_abs_error": error,
    }
    with open(os.path.join(out_dir, EXPORT_INFO_FILE), "w") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
    return info


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m model_artifacts.runtime_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--recipe", required=True, choices=("trace", "script"))
    parser.add_argument("--input-shape", required=True, type=int, nargs=4, metavar=("N", "C", "H", "W"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    info = export(args.model, args.recipe, args.input_shape, args.out)
    print("exported {} ({}) with torch {} to {}".format(info["model"], info["recipe"], info["torch_version"], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
