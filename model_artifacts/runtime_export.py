"""Model -> TorchScript, shared by the local build and the serving runtime's own image.

The EIA runtimes are torch 1.3.1 / 1.5.1 on Python 3.6 and refuse archives a newer torch writes.
The pipeline runs this module inside the runtime's Deep Learning Container image; the regular build
(`python -m model_artifacts build --runtime-export DIR`) then packages the result. The local build
runs it too, in a fresh interpreter per model: TorchScript mangles the names of classes it compiles
twice in one process, so a second conversion there would write different bytes. So this file stays
valid Python 3.6 and imports only torch, the example models and the user's model factory.

    python -m model_artifacts.runtime_export --model example-resnet --recipe eia-1.5 \\
        --input-shape 1 3 224 224 --out build/runtime-export/image-classifier
    python -m model_artifacts.runtime_export --factory my_models.net:build --weights net.pth \\
        --recipe optimized --input-shape 1 3 224 224 --out build/runtime-export/net

Recipe aoti (torch >= 2.6, the successor CPU runtimes) writes model.pt2 instead of model.pt: torch.export,
then AOTInductor compiles the frozen graph to a shared library with a C++ compiler (the runtime's image has
build-essential), packaged with its weights.
"""
import argparse
import contextlib
import fcntl
import importlib
import inspect
import json
import os
import pickle
import shutil
import subprocess
import sys
import types
import zipfile

import torch

from model_artifacts.example_models import build_example_model

EXPORTED_MODEL_FILE = "model.pt"  # also named in build.py, which must not import torch
AOTI_MODEL_FILE = "model.pt2"  # recipe aoti's package, also named in build.py and the handler
EXPORT_INFO_FILE = "export.json"

# recipe -> how the model is produced. eia-1.3 / eia-1.5 are the seed's recipes for those runtimes.
# optimized (CPU runtimes, torch >= 1.10) adds torch.jit.freeze here; the handler applies
# torch.jit.optimize_for_inference when it loads the model, because its MKLDNN constants cannot be
# saved and it tunes for the serving machine's CPU. aoti: torch.export + AOTInductor (not TorchScript).
RECIPES = {"eia-1.3": "trace", "eia-1.5": "script", "optimized": "trace", "trace": "trace", "script": "script", "aoti": "export"}
AOTI_MIN_TORCH = (2, 6)  # aoti_compile_and_package(ep, package_path=...) and aoti_load_package as used here
# Parity tolerances: optimize_for_inference and Inductor fuse and reorder float operations.
TOLERANCES = {"optimized": (1e-3, 1e-3), "aoti": (1e-3, 1e-3)}
DEFAULT_TOLERANCE = (1e-4, 1e-4)
# What AOTInductor compiles for. Left to itself it passes -march=native and vectorizes for the build machine's
# widest ISA, so a package built on an AVX-512 CodeBuild host could stop with SIGILL on a serving host without
# it, and its bytes would depend on the build host. x86-64-v3 (AVX2, FMA: every x86 SageMaker instance type
# since the 4th generation) makes both fixed. oneDNN still picks its convolution kernels at run time.
AOTI_MARCH = "x86-64-v3"
AOTI_SIMD_BITS = 256
AOTI_BUILD_DIR = "/tmp/model-artifacts-aoti"  # fixed paths: see _fixed_paths
AOTI_SITE_PACKAGES = "/tmp/model-artifacts-aoti-site-packages"


class ModelLoadError(ValueError):
    """The model factory or the weights file could not be used; the message says how to fix it."""


class ParityError(RuntimeError):
    """The saved TorchScript does not reproduce the eager model's outputs."""


def load_model(example=None, factory=None, weights=None):
    """An eval-mode nn.Module: an example model, or `package.module:function`, plus an optional state_dict."""
    if factory:
        model = _call_factory(factory)
    else:
        model = build_example_model(example)
    if weights:
        _load_weights(model, weights)
    return model.eval()


def _call_factory(factory):
    module_name, _, function_name = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelLoadError(
            "model factory {!r}: cannot import {!r} ({}); run from the directory that holds the package, "
            "or put it on PYTHONPATH".format(factory, module_name, error)
        )
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ModelLoadError("model factory {!r}: {} has no function {!r}".format(factory, module_name, function_name))
    model = function()
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError("model factory {!r} returned {}, not a torch.nn.Module".format(factory, type(model).__name__))
    return model


class _StateDictUnpickler(pickle.Unpickler):
    """What weights_only=True allows, for torch < 1.13 (the EIA runtimes), which has no safe loader:
    tensors, their storages and containers; never a global that runs code."""

    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
               ("torch", "Size"), ("torch", "device")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED or (module == "torch" and name.endswith("Storage")):
            return super(_StateDictUnpickler, self).find_class(module, name)
        raise pickle.UnpicklingError("global '{}.{}' is not allowed in weights".format(module, name))


_STATE_DICT_PICKLE = types.SimpleNamespace(
    Unpickler=_StateDictUnpickler, load=lambda handle, **options: _StateDictUnpickler(handle, **options).load(),
    __name__="state_dict_pickle",
)


def _load_weights(model, path):
    # weights_only=True unpickles tensors and containers only, never arbitrary objects; torch < 1.13
    # gets the same restriction from _StateDictUnpickler.
    if "weights_only" in inspect.signature(torch.load).parameters:
        options = {"weights_only": True}
    else:
        options = {"pickle_module": _STATE_DICT_PICKLE}
    try:
        state = torch.load(path, map_location="cpu", **options)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, OSError...
        fix = "save it with torch.save(model.state_dict(), path)"
        if zipfile.is_zipfile(str(path)) and torch_version() < (1, 6):
            fix = ("torch {} (the runtime's) reads only torch's legacy format: save it with torch.save(model.state_dict(), "
                   "path, _use_new_zipfile_serialization=False)".format(torch.__version__))
        raise ModelLoadError(
            "weights {!r}: not a state_dict that torch.load(weights_only=True) accepts ({}); {}".format(
                str(path), str(error).splitlines()[0], fix)
        )
    if not isinstance(state, dict):
        raise ModelLoadError("weights {!r}: holds a {}, not a state_dict".format(str(path), type(state).__name__))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ModelLoadError("weights {!r} do not fit the model: {}".format(str(path), " ".join(str(error).split())))


def torch_version():
    return tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def model_file(recipe):
    return AOTI_MODEL_FILE if RECIPES.get(recipe) == "export" else EXPORTED_MODEL_FILE


def convert(model, recipe, example):
    """TorchScript for every recipe but aoti (see compile_aoti)."""
    if recipe not in RECIPES:
        raise ValueError("unknown recipe {!r}; accepted: {}".format(recipe, ", ".join(sorted(RECIPES))))
    if RECIPES[recipe] == "export":
        raise ValueError("recipe aoti writes a package, not a module: use compile_aoti")
    if RECIPES[recipe] == "trace":
        # torch 2.x stores the example input in the archive unless told not to; 1.x has no such option.
        options = {"_store_inputs": False} if "_store_inputs" in inspect.signature(torch.jit.trace).parameters else {}
        module = torch.jit.trace(model, example, **options)
    else:
        module = torch.jit.script(model)
    if recipe == "optimized":
        module = torch.jit.freeze(module.eval())
    return module


def served_form(module, recipe):
    """The module as the handler runs it (see RECIPES): optimized ones get optimize_for_inference."""
    if recipe == "optimized":
        return torch.jit.optimize_for_inference(module)
    return module


def compile_aoti(model, example, path):
    """torch.export with a dynamic batch, then AOTInductor with freezing into the .pt2 package at `path`.

    Freezing folds batch norms into the convolutions, fuses conv/bn/relu and the residual adds, and prepacks
    the weights for oneDNN; Inductor applies it only with autograd off. The batch dimension stays dynamic
    (an example of batch 2: export specializes a batch of 1), so the package serves every batch size.
    The compile runs in a child process (_compile_exported) for reproducibility: see _fixed_paths."""
    if torch_version() < AOTI_MIN_TORCH:
        raise ModelLoadError("recipe aoti needs torch >= {}.{} (torch.export and AOTInductor packages); this runtime has torch {}: "
                             "use recipe optimized".format(AOTI_MIN_TORCH[0], AOTI_MIN_TORCH[1], torch.__version__))
    if not shutil.which("g++"):
        raise ModelLoadError("recipe aoti compiles the model to C++ with g++, which is not on PATH: install a C++ compiler "
                             "(build-essential; the pytorch-inference images have it), or use recipe optimized")
    example = example.expand([2] + list(example.shape[1:])).contiguous()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        except Exception as error:  # torch.export raises many kinds (UserError, Unsupported, GuardOnDataDependentSymNode...)
            raise ModelLoadError("recipe aoti: torch.export could not capture the model as one graph with a dynamic batch ({}); "
                                 "use recipe optimized (TorchScript), or script for data-dependent control flow".format(
                                     str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__))
    exported, compiled = path + ".exported.pt2", os.path.join(os.path.dirname(path), "compiled.pt2")
    torch.export.save(program, exported)
    try:
        with _fixed_paths() as env:
            subprocess.check_call([sys.executable, "-m", "model_artifacts.runtime_export", COMPILE_COMMAND, exported, compiled], env=env)
        _without_timestamps(compiled, path)
    finally:
        for scratch in (exported, compiled):
            if os.path.exists(scratch):
                os.remove(scratch)


COMPILE_COMMAND = "compile-exported-program"  # main()'s internal command: compile_aoti's child


def _compile_exported(exported, package_path):
    """The child: AOTInductor on the saved program, with torch imported through AOTI_SITE_PACKAGES."""
    from torch._inductor import aoti_compile_and_package

    assert torch.__file__.startswith(AOTI_SITE_PACKAGES), torch.__file__
    program = torch.export.load(exported)
    with torch.no_grad():
        aoti_compile_and_package(program, package_path=package_path, inductor_configs={
            "freezing": True, "cpp.simdlen": AOTI_SIMD_BITS, "cpp.cxx": (None, os.path.join(AOTI_BUILD_DIR, "g++"))})


def _without_timestamps(source, destination):
    """The package rewritten with every entry dated 1980-01-01 (zipfile stamps them with the time of the
    build), in the same order, with the same modes and the same (no) compression."""
    with zipfile.ZipFile(source) as package, zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as target:
        for entry in package.infolist():
            info = zipfile.ZipInfo(entry.filename, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr, info.create_system = entry.external_attr, 3  # 3: Unix, whatever built it
            target.writestr(info, package.read(entry))


@contextlib.contextmanager
def _fixed_paths():
    """The child's environment, with the same paths in every checkout, one build at a time.

    Inductor writes its cache directory and the compile command (torch's include and library directories) into the
    generated C++ and names the files after hashes of both, so a package would differ with the directory of the venv.
    The child imports torch through AOTI_SITE_PACKAGES, a link to this torch's site-packages, and builds in
    AOTI_BUILD_DIR, emptied before and after (nothing shipped comes from another build's cache), with a g++ that
    compiles for AOTI_MARCH instead of -march=native."""
    with open(AOTI_BUILD_DIR + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel model builds (build --jobs), other checkouts: one at a time
        shutil.rmtree(AOTI_BUILD_DIR, ignore_errors=True)
        os.makedirs(AOTI_BUILD_DIR)
        if os.path.lexists(AOTI_SITE_PACKAGES):
            os.remove(AOTI_SITE_PACKAGES)
        os.symlink(os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__))), AOTI_SITE_PACKAGES)
        compiler = os.path.join(AOTI_BUILD_DIR, "g++")
        with open(compiler, "w") as handle:
            handle.write('#!/bin/sh\nfor a; do shift; [ "$a" = -march=native ] && a=-march={}; set -- "$@" "$a"; done\n'
                         'exec g++ "$@"\n'.format(AOTI_MARCH))
        os.chmod(compiler, 0o755)
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(AOTI_BUILD_DIR, "cache"),
                   PYTHONPATH=os.pathsep.join([AOTI_SITE_PACKAGES] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        try:
            yield env
        finally:
            shutil.rmtree(AOTI_BUILD_DIR, ignore_errors=True)
            os.remove(AOTI_SITE_PACKAGES)


def load_served(path, recipe):
    """The saved model as the handler serves it: a module, or the AOTInductor package's runner."""
    if RECIPES[recipe] == "export":
        from torch._inductor import aoti_load_package  # not `import torch._inductor`: it would make torch local here

        return aoti_load_package(path)
    return served_form(torch.jit.load(path, map_location="cpu"), recipe)


def check_parity(model, module, input_shape, dtype=torch.float32, atol=1e-4, rtol=1e-4, batch_sizes=(1, 2)):
    """Compare the saved module (as served) with the eager model on seeded random inputs; the max abs error."""
    generator = torch.Generator().manual_seed(1234)
    worst = 0.0
    with torch.no_grad():
        for batch in batch_sizes:
            example = torch.randn([batch] + list(input_shape[1:]), generator=generator).to(dtype)
            expected, actual = model(example), module(example)
            if expected.shape != actual.shape:
                raise ParityError("parity check failed at batch {}: eager shape {} != saved model's shape {}".format(
                    batch, list(expected.shape), list(actual.shape)))
            error = (expected - actual).abs()
            worst = max(worst, float(error.max()))
            if not torch.allclose(expected, actual, atol=atol, rtol=rtol):
                index = tuple(int(i) for i in (error == error.max()).nonzero()[0])
                raise ParityError(
                    "parity check failed at batch {}: output{} eager={:.6g} saved={:.6g} (max abs error {:.3g}, "
                    "atol={}, rtol={}); the model has data-dependent control flow that tracing (trace, optimized, aoti) "
                    "froze, or is not deterministic: try recipe: script".format(
                        batch, list(index), float(expected[index]), float(actual[index]), worst, atol, rtol)
                )
    return worst


def export(out_dir, recipe, input_shape, dtype="float32", example=None, factory=None, weights=None):
    """Convert with this torch into out_dir/model.pt (aoti: model.pt2), check it (as served) against eager,
    record export.json."""
    torch_dtype = getattr(torch, dtype)
    model = load_model(example, factory, weights)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    path = os.path.join(out_dir, model_file(recipe))
    example_input = torch.zeros(input_shape, dtype=torch_dtype)
    if RECIPES.get(recipe) == "export":
        compile_aoti(model, example_input, path)
    else:
        torch.jit.save(convert(model, recipe, example_input), path)
    atol, rtol = TOLERANCES.get(recipe, DEFAULT_TOLERANCE)
    error = check_parity(model, load_served(path, recipe), input_shape, torch_dtype, atol, rtol)
    info = {
        "model": factory or example,
        "recipe": recipe,
        "input_shape": list(input_shape),
        "dtype": dtype,
        "torch_version": torch.__version__.split("+")[0],
        "parity": {"max_abs_error": error, "atol": atol, "rtol": rtol},
    }
    with open(os.path.join(out_dir, EXPORT_INFO_FILE), "w") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
    return info


def main(argv):
    if argv[:1] == [COMPILE_COMMAND]:
        _compile_exported(*argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m model_artifacts.runtime_export", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="an example model (example-resnet, example-resnet-tiny, example-resnet-50)")
    source.add_argument("--factory", help="package.module:function returning an nn.Module")
    parser.add_argument("--weights", help="a state_dict (.pth), loaded with weights_only=True")
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--input-shape", required=True, type=int, nargs=4, metavar=("N", "C", "H", "W"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        info = export(args.out, args.recipe, args.input_shape, args.dtype, args.model, args.factory, args.weights)
    except (ModelLoadError, ParityError) as error:
        print("error: {}".format(error), file=sys.stderr)
        return 2
    print("exported {} ({}) with torch {} to {}".format(info["model"], info["recipe"], info["torch_version"], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
