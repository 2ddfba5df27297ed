"""The serving benchmark's in-process baseline, run by a serving runtime's own Python (3.6 in the EIA image).

    <runtime python> benchmarks/in_runtime.py MODEL_DIR BODY_FILE

Loads MODEL_DIR (an extracted model.tar.gz) with its own code/inference.py model_fn, as the model server's
worker does, in an environment with the worker's thread settings (OMP_NUM_THREADS), prints "ready", then
answers each line read from stdin with the seconds one call took, timed here so that the pipe is not:
  forward   the handler's forward of the body's batch (what predict_fn runs after decoding);
  handler   input_fn + predict_fn + output_fn on the body, JSON answer (the handler's whole share).
Valid Python 3.6; imports only what the handler imports.
"""
import os
import sys
import time

NPY = "application/x-npy"
JSON = "application/json"


def main(argv):
    model_dir, body_file = argv
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    import torch

    if threads:
        torch.set_num_threads(threads)  # what the worker's torch does with the container's OMP_NUM_THREADS
    sys.path.insert(0, os.path.join(model_dir, "code"))
    import inference

    model = inference.model_fn(model_dir)
    with open(body_file, "rb") as handle:
        body = bytearray(handle.read())  # what both model servers' workers hand the handler
    batch = inference.decode_request(body, NPY)

    def forward():
        inference.forward(model, batch)

    def handler():
        inference.output_fn(inference.predict_fn(inference.input_fn(body, NPY), model), JSON)

    calls = {"forward": forward, "handler": handler}
    print("ready", flush=True)
    for line in sys.stdin:
        call = calls[line.strip()]
        started = time.perf_counter()
        call()
        sys.stdout.write("{:.9f}\n".format(time.perf_counter() - started))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
