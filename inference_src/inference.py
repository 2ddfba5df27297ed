"""SageMaker PyTorch serving handler: model_fn, input_fn, predict_fn, output_fn.

Ships inside model.tar.gz as code/inference.py and runs in the SageMaker PyTorch serving
containers, including the Elastic Inference ones (torch 1.3.1 and 1.5.1 on Python 3.6 with
Pillow 7), so it must stay valid Python 3.6 and import nothing but torch, numpy, Pillow (only
for image requests; every PyTorch serving image has it) and the standard library.

Requests (Content-Type)            | Responses (Accept)
-----------------------------------|------------------------------------------------
application/x-npy  float NCHW/CHW  | application/json  {"shape", "predictions": top-k}
application/json   {"instances"}   | application/x-npy raw logits
application/json   {"image(s)": base64 JPEG/PNG, "short": N}  (MXNet SSD contract)
image/jpeg, image/png  one image   |

A request the client must fix is answered with a 4xx status and a one-line JSON body
{"status": ..., "error": ...}; the worker keeps serving.
"""
import ast
import io
import json
import logging
import os
import struct

import numpy as np
import torch

from request_handling import (JSON, JSON_ACCEPTS, NPY, RequestError, answer, check_body, decode_base64, limit, load_json_object,
                              media_types, output, over_limit, short_side, take_json_as_bytes)

logger = logging.getLogger(__name__)
take_json_as_bytes()  # a non-UTF-8 JSON body is then the client's 400, not the toolkit's decoding 500

MODEL_FILE = "model.pt"
MODEL_INFO_FILE = "model_info.json"  # stored inside model.pt by the build step (_extra_files)
# Recipe aoti (torch >= 2.6 CPU runtimes): an AOTInductor package instead of model.pt, its info file beside it.
AOTI_MODEL_FILE = "model.pt2"
# The toolkit's convention: the EIA containers set this when an accelerator is attached.
ACCELERATOR_PRESENT_ENV = "SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"
TOP_K = 5

JPEG = "image/jpeg"
PNG = "image/png"
IMAGE_TYPES = (JPEG, PNG)
ACCEPTED_CONTENT_TYPES = "{}, {} ({{\"instances\": ...}} or {{\"image\": <base64>}}), {} or {}".format(NPY, JSON, JPEG, PNG)
JSON_KEYS = ("instances", "image", "images", "short")
JSON_EXAMPLE = '{"instances": NCHW numbers} or {"image": "<base64 JPEG/PNG>", "short": N}'
EXIF_ORIENTATION = 0x0112

# Used when the build recorded no preprocessing: ImageNet statistics, resize 256 -> crop 224.
DEFAULT_IMAGE_PREPROCESSING = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize_short_side": None}


class ImageBatch(object):
    """Images read up to their headers only: predict_fn, which knows the model's input size, decodes them one
    at a time (at reduced scale where it can) straight into the model's input, so only one is ever decoded."""

    def __init__(self, images, short_side, names=None):
        self.images = images
        self.short_side = short_side
        self.names = names or ["body"]


def accelerator_present():
    return os.environ.get(ACCELERATOR_PRESENT_ENV) == "true"


def torch_minor_version():
    parts = torch.__version__.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


class LoadedModel(object):
    """The TorchScript module plus what the build step recorded about its input."""

    def __init__(self, module, info, device):
        self.module = module
        self.info = info
        self.device = device

    @property
    def input_shape(self):
        return tuple(self.info.get("input_shape", ()))

    @property
    def dtype(self):
        # The build records the example input's dtype (float32 unless the model was built for another).
        return getattr(torch, self.info.get("dtype") or "float32")

    @property
    def image_preprocessing(self):
        settings = dict(DEFAULT_IMAGE_PREPROCESSING)
        settings.update(self.info.get("image_preprocessing") or {})
        return settings


# ------------------------------------------------------------------------------------ model_fn


def _extra_files_map():
    """torch < 1.6 (both EIA runtimes) takes only its own ExtraFilesMap for _extra_files; newer torch a dict."""
    if torch_minor_version() < (1, 6):
        extra_files = torch._C.ExtraFilesMap()
        extra_files[MODEL_INFO_FILE] = ""
        return extra_files
    return {MODEL_INFO_FILE: ""}


def _gpu_id(context):
    """The GPU the model server assigned this worker (sagemaker-inference >= 1.7 passes its context), else 0."""
    properties = getattr(context, "system_properties", None) or {}
    return int(properties.get("gpu_id") or 0)


def model_fn(model_dir, context=None):
    if os.path.exists(os.path.join(model_dir, AOTI_MODEL_FILE)):
        return _warmed_up(_load_aoti_package(model_dir), AOTI_MODEL_FILE)
    extra_files = _extra_files_map()
    eia = accelerator_present()
    if eia and torch_minor_version() == (1, 5):
        # EI 1.5.1 recipe: the profiling executor cannot run graphs on the accelerator; off before loading.
        torch._C._jit_set_profiling_executor(False)
    # Always load on the CPU: the EI client framework is CPU-only, the accelerator is reached through the JIT.
    module = torch.jit.load(os.path.join(model_dir, MODEL_FILE), map_location=torch.device("cpu"), _extra_files=extra_files)
    module.eval()
    device = torch.device("cpu")
    if eia and torch_minor_version() == (1, 5):
        import torcheia  # only in the EIA 1.5.1 image

        module = torcheia.jit.attach_eia(module, 0)
    elif not eia and torch.cuda.is_available():
        # One worker per GPU (config/workers.py): the model server gives each worker its own GPU.
        device = torch.device("cuda", _gpu_id(context))
        module = module.to(device)
    info = json.loads(extra_files[MODEL_INFO_FILE] or "{}")
    if info.get("recipe") == "optimized" and device.type == "cpu" and hasattr(torch.jit, "optimize_for_inference"):
        # The build froze the model; MKLDNN layouts are chosen here, for this machine's CPU.
        module = torch.jit.optimize_for_inference(module)
    return _warmed_up(LoadedModel(module, info, device), MODEL_FILE)


def _load_aoti_package(model_dir):
    """The compiled CPU model (AOTInductor extracts its shared library and loads it); GPUs and EI never get one."""
    from torch._inductor import aoti_load_package  # torch >= 2.6; the build refuses recipe aoti for older runtimes

    with open(os.path.join(model_dir, MODEL_INFO_FILE)) as handle:
        info = json.load(handle)
    return LoadedModel(aoti_load_package(os.path.join(model_dir, AOTI_MODEL_FILE)), info, torch.device("cpu"))


def _warmed_up(model, model_file):
    if model.input_shape:
        # The JIT optimizes (and EI compiles) a graph on its first run: pay for it here, not on the first request.
        forward(model, torch.zeros(model.input_shape, dtype=model.dtype))
    logger.info("loaded %s on %s (accelerator present: %s)", model_file, model.device, accelerator_present())
    return model


# ------------------------------------------------------------------------------------ input_fn


def input_fn(request_body, content_type, context=None):
    try:
        return decode_request(request_body, content_type)
    except RequestError as error:
        return answer(error, context)


def decode_request(body, content_type):
    """Body (bytes; str from toolkits that decode JSON themselves) -> float tensor batch or ImageBatch."""
    body = check_body(body, "one of " + ACCEPTED_CONTENT_TYPES)
    media_type = media_types(content_type)[0] if content_type else ""
    if media_type == NPY:
        return _as_batch(_decode_npy(body))
    if media_type == JSON:
        return _decode_json(body)
    if media_type in IMAGE_TYPES:
        return ImageBatch([_open_image(body, "body")], None)
    if not media_type:
        raise RequestError(415, "missing Content-Type; send one of " + ACCEPTED_CONTENT_TYPES)
    raise RequestError(415, "unsupported content type {!r}; send one of {}".format(content_type, ACCEPTED_CONTENT_TYPES))


NPY_MAGIC = b"\x93NUMPY"
NPY_HEADER_LENGTH = {1: "<H", 2: "<I"}  # format major version -> how its header length is stored (3.0: structured arrays)
NPY_HEADER_KEYS = {"descr", "fortran_order", "shape"}
NPY_MAX_HEADER_BYTES = 10000  # numpy's own limit (np.load's max_header_size)


def _decode_npy(body):
    """The body's array, read in place: its header is parsed, then the data is viewed, not copied (np.load
    copies it twice). The model servers hand the body over as a bytearray, so the view is writable."""
    try:
        shape, fortran_order, dtype, offset = _npy_header(body)
    except Exception as error:  # ValueError, SyntaxError, struct.error, RecursionError... for a corrupt header
        raise RequestError(400, "body is not a valid .npy array ({}); write it with numpy.save".format(error))
    if dtype.kind not in "fiu":
        raise RequestError(400, "expected a float32 array, got dtype {}".format(dtype))
    count = 1
    for size in shape:
        count *= size
    if len(body) - offset != count * dtype.itemsize:
        raise RequestError(400, "body is not a valid .npy array (its header describes {} bytes of {} data, the body holds {}); "
                                "write it with numpy.save".format(count * dtype.itemsize, dtype, len(body) - offset))
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)
    return array if array.flags.writeable else array.copy()  # torch warns on (and must not write to) read-only memory


def _npy_header(body):
    """(shape, fortran_order, dtype, data offset) of an .npy body, format 1.0 or 2.0 (numpy's format spec).

    The header is a Python dict literal, read with ast.literal_eval as numpy >= 1.24 reads it: numpy 1.19 (the EIA
    images) first passes it through the tokenize module, which took longer than the rest of the decoding."""
    if bytes(body[:6]) != NPY_MAGIC or len(body) < 8:
        raise ValueError("no .npy magic string")
    major, minor = body[6], body[7]
    if major not in NPY_HEADER_LENGTH or minor != 0:
        raise ValueError("unsupported format version {}.{}".format(major, minor))
    length_format = NPY_HEADER_LENGTH[major]
    start = 8 + struct.calcsize(length_format)
    (length,) = struct.unpack(length_format, bytes(body[8:start]))
    if length > NPY_MAX_HEADER_BYTES:
        raise ValueError("a header of {} bytes, over numpy's own limit of {}".format(length, NPY_MAX_HEADER_BYTES))
    text = bytes(body[start:start + length]).decode("latin1")
    # A numeric array's header is one dict holding one tuple (its shape); nesting would overflow Python 3.6's parser.
    if sum(text.count(bracket) for bracket in "{([") > 2:
        raise ValueError("not the header of a numeric array (nested brackets)")
    header = ast.literal_eval(text)
    if not isinstance(header, dict) or set(header) != NPY_HEADER_KEYS:
        raise ValueError("the header is not a dict of {}".format(", ".join(sorted(NPY_HEADER_KEYS))))
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(size, int) and size >= 0 for size in shape):
        raise ValueError("shape {!r} is not a tuple of sizes".format(shape))
    if not isinstance(header["fortran_order"], bool):
        raise ValueError("fortran_order {!r} is not a bool".format(header["fortran_order"]))
    return shape, header["fortran_order"], np.dtype(header["descr"]), start + length


def _as_batch(array):
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise RequestError(
            400, "expected an NCHW batch (rank 4) or one CHW image (rank 3), got rank {} shape {}".format(array.ndim, list(array.shape))
        )
    if array.shape[0] == 0:
        raise RequestError(400, "the batch is empty; send at least one image")
    if array.shape[0] > limit("max_batch_size"):
        raise over_limit("max_batch_size", "the batch has {} rows".format(array.shape[0]))
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _decode_json(body):
    document = load_json_object(body, JSON_KEYS, JSON_EXAMPLE)
    if "instances" in document:
        return _as_batch(_numbers(document["instances"]))
    if "image" in document:
        encoded = [document["image"]]
    elif "images" in document:
        encoded = document["images"]
        if not isinstance(encoded, list) or not encoded:
            raise RequestError(400, '"images" must be a non-empty list of base64 JPEG/PNG strings')
        if len(encoded) > limit("max_images_per_request"):
            raise over_limit("max_images_per_request", "the request has {} images".format(len(encoded)))
    else:
        raise RequestError(400, 'JSON body needs "instances" (numbers) or "image"/"images" (base64 JPEG/PNG)')
    short = document.get("short")
    short = None if short is None else short_side(short)
    names = ["image {}".format(index) for index in range(len(encoded))]
    return ImageBatch([_open_image(decode_base64(value, name), name) for name, value in zip(names, encoded)], short, names)


def _numbers(instances):
    try:
        array = np.asarray(instances, dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(400, '"instances" must be a rectangular nested list of numbers')
    return array


def _open_image(data, what):
    """A JPEG or PNG read up to its header (its size is checked before anything is decoded)."""
    from PIL import Image  # only image requests need Pillow

    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # over twice Pillow's own limit: refused from the header alone
        raise over_limit("max_image_pixels", "{} has more than {} pixels".format(what, 2 * Image.MAX_IMAGE_PIXELS))
    except Exception:  # Pillow's UnidentifiedImageError
        raise RequestError(400, "{} is not a JPEG or PNG image".format(what))
    if image.format not in ("JPEG", "PNG"):
        raise RequestError(415, "{} is a {} image; send JPEG or PNG".format(what, image.format))
    width, height = image.size
    if width * height > limit("max_image_pixels"):
        raise over_limit("max_image_pixels", "{} is {}x{} pixels".format(what, width, height))
    return image


# ------------------------------------------------------------------------------------ predict_fn


def predict_fn(input_data, model, context=None):
    if isinstance(input_data, RequestError):
        return input_data  # already answered by input_fn; output_fn writes the body
    try:
        batch = _model_input(input_data, model)
    except RequestError as error:
        return answer(error, context)
    return forward(model, batch)


def forward(model, batch):
    """The model on one batch, on the accelerator when one is attached (predict_fn and model_fn's warm-up)."""
    batch = batch.to(model.device, model.dtype).contiguous()  # AOTInductor's kernels index dense memory
    with torch.no_grad():
        if not accelerator_present():
            return model.module(batch).cpu()
        if torch_minor_version() == (1, 3):
            # torch_eia 1.3.1 (only that build takes options): run the graph on accelerator 0.
            with torch.jit.optimized_execution(True, {"target_device": "eia:0"}):
                return model.module(batch)
        # torcheia (1.5.1): the attached module runs on the accelerator under the optimizing executor.
        with torch.jit.optimized_execution(True):
            return model.module(batch)


def _model_input(input_data, model):
    expected = model.input_shape
    if isinstance(input_data, ImageBatch):
        if not expected:
            raise RequestError(415, "this model recorded no input shape, so it cannot take images; send {}".format(NPY))
        return _image_batch(input_data, expected, model.image_preprocessing)
    if expected and tuple(input_data.shape[1:]) != tuple(expected[1:]):
        raise RequestError(400, "expected images of shape {} (CHW), got {}".format(list(expected[1:]), list(input_data.shape[1:])))
    return input_data


def _image_batch(batch, input_shape, settings):
    """The model input of an ImageBatch, each image decoded in turn into its row of one preallocated array."""
    short = _short_side_for(input_shape, settings, batch.short_side)
    pixels = 0
    for image in batch.images:
        _decode_at_reduced_scale(image, short)
        pixels += image.size[0] * image.size[1]
    if pixels > limit("max_pixels_per_request"):
        raise over_limit("max_pixels_per_request", "the request's images decode to {} pixels".format(pixels))
    rows = np.empty((len(batch.images),) + tuple(input_shape[1:]), dtype=np.float32)
    for row, (image, name) in enumerate(zip(batch.images, batch.names)):
        rows[row] = preprocess_image(image, input_shape, settings, short, name)
        image.close()  # frees the decoded pixels before the next image is decoded
    return torch.from_numpy(rows)


def _short_side_for(input_shape, settings, requested):
    """The resize target of the short side: the request's "short", the build's setting, or crop x 256/224."""
    height, width = input_shape[2:]
    short = requested or settings.get("resize_short_side") or int(round(max(height, width) * 256 / 224.0))
    if short < max(height, width):
        raise RequestError(400, '"short" ({}) must be at least the model input size {}x{}'.format(short, height, width))
    return short


def _decode_at_reduced_scale(image, short):
    """JPEG only: decode at 1/2, 1/4 or 1/8 scale (Pillow's draft, in the decoder) while both sides stay at
    least `short`, so the resize still only shrinks. Idempotent: Pillow ignores a second draft."""
    if image.format == "JPEG":
        image.draft(None, (short, short))


# EXIF orientation -> the transpose that shows the image upright (ImageOps.exif_transpose's table).
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def _orientation(image):
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # unreadable EXIF: show the image as stored
        return 1


def preprocess_image(image, input_shape, settings, short_side=None, what="the image"):
    """PIL image -> float32 CHW: upright per EXIF, short side resized to `short_side`, center crop, normalized.

    Only the crop box is resized (Image.resize's box, in source pixels), so the work and memory follow the
    model's input size, not the image's; the EXIF rotation is applied to that small result. A center crop
    maps onto the center crop of the stored image under every EXIF transpose, with width and height swapped
    by the 90-degree ones.
    """
    from PIL import Image

    channels, height, width = input_shape[1:]
    short = _short_side_for(input_shape, settings, short_side)
    _decode_at_reduced_scale(image, short)
    orientation = _orientation(image)
    out_width, out_height = (height, width) if orientation >= 5 else (width, height)  # in the stored image's axes
    try:
        image.load()
    except Exception as error:  # truncated or corrupt data: OSError, ValueError, SyntaxError...
        raise RequestError(400, "{} is a damaged {} image ({})".format(what, image.format, error))
    mode = "RGB" if channels == 3 else "L"
    if image.mode != mode:  # convert() copies even to the same mode
        image = image.convert(mode)
    stored_width, stored_height = image.size
    scale = float(short) / min(stored_width, stored_height)
    # The crop in source pixels; an image too elongated to cover the crop at this scale is stretched to it.
    box_width, box_height = min(stored_width, out_width / scale), min(stored_height, out_height / scale)
    left, top = (stored_width - box_width) / 2.0, (stored_height - box_height) / 2.0
    image = image.resize((out_width, out_height), Image.BILINEAR, box=(left, top, left + box_width, top + box_height))
    if orientation in _UPRIGHT:
        image = image.transpose(getattr(getattr(Image, "Transpose", Image), _UPRIGHT[orientation]))
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 255.0
    mean = np.asarray(settings["mean"], dtype=np.float32)[:channels]
    std = np.asarray(settings["std"], dtype=np.float32)[:channels]
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1), dtype=np.float32)


# ------------------------------------------------------------------------------------ output_fn


def output_fn(prediction, accept, context=None):
    return output(prediction, accept, context, encode_prediction)


def encode_prediction(prediction, accept):
    for media_type in media_types(accept) or [JSON]:
        if media_type in JSON_ACCEPTS:
            return json.dumps(_top_k(prediction)), JSON
        if media_type == NPY:
            buffer = io.BytesIO()
            np.save(buffer, prediction.numpy(), allow_pickle=False)
            return buffer.getvalue(), NPY
    raise RequestError(406, "unsupported Accept {!r}; accept {} or {}".format(accept, JSON, NPY))


def _top_k(logits):
    probabilities = torch.softmax(logits.float(), dim=1)
    k = min(TOP_K, probabilities.shape[1])
    scores, classes = probabilities.topk(k, dim=1)
    return {
        "shape": list(logits.shape),
        "predictions": [
            [{"class": int(c), "score": round(float(s), 6)} for c, s in zip(row_classes, row_scores)]
            for row_classes, row_scores in zip(classes.tolist(), scores.tolist())
        ],
    }
