"""What a SageMaker PyTorch or MXNet serving container runs at start, pointed at a local work directory.

Run by LocalEndpoint as `<runtime venv>/bin/python -m local_serving.container WORK_DIR`, in the
serving runtime's own venv (runtimes/), with the container's environment already set
(SAGEMAKER_BASE_DIR=WORK_DIR, SAGEMAKER_PROGRAM, ports, ...) and PYTHONPATH = this repository only.
It calls the image's own entry point, the `serving.main()` of the one serving toolkit the venv has:

- sagemaker-pytorch-inference 1.x (the EIA images, Python 3.6): multi-model-server (MMS);
- sagemaker-pytorch-inference 2.x (pytorch-inference 2.x images): TorchServe;
- sagemaker-mxnet-inference 1.2.3 with sagemaker-inference 1.1.0 (mxnet-inference-eia 1.4.1, Python 3.6):
  model-archiver, then mxnet-model-server 1.0.5;
- sagemaker-mxnet-inference 1.5.5 with sagemaker-inference 1.10.1 (mxnet-inference 1.9.0, Python 3.8):
  multi-model-server 1.1.8.

It must stay valid Python 3.6 and import nothing but the standard library and the runtime's toolkit.
"""
import importlib.util
import os
import sys

MMS_CONFIG = "sagemaker-mms.properties"
TS_CONFIG = "sagemaker-ts.properties"
MMS_LOG_CONFIG_ENV = "LOCAL_SERVING_MMS_LOG_CONFIG"  # set by LocalEndpoint
MMS_MANAGEMENT_ENV = "LOCAL_SERVING_MMS_MANAGEMENT_ADDRESS"  # set by LocalEndpoint: a free loopback address
PYTORCH_TOOLKIT = "sagemaker_pytorch_serving_container"
MXNET_TOOLKIT = "sagemaker_mxnet_serving_container"


def toolkit():
    """The serving toolkit installed in this runtime: each image has exactly one."""
    # Looked up, not imported: an import error inside the toolkit must surface from main(), not select another.
    found = [name for name in (PYTORCH_TOOLKIT, MXNET_TOOLKIT) if importlib.util.find_spec(name) is not None]
    if len(found) != 1:
        raise SystemExit("local_serving.container: expected one SageMaker serving toolkit in {}, found {}".format(
            sys.prefix, found or "none"))
    return found[0]


def model_server(name):
    """'torchserve' when the toolkit serves with TorchServe (sagemaker-pytorch-inference 2.x has a torchserve
    module), else 'mms' (MMS / mxnet-model-server, started through sagemaker_inference.model_server)."""
    if name == PYTORCH_TOOLKIT and importlib.util.find_spec(PYTORCH_TOOLKIT + ".torchserve") is not None:
        return "torchserve"
    return "mms"


def _skip_zombies_in_the_server_scan(mms):
    """The toolkit finds the server it started by scanning every process's command line, retried for 10 s. The
    `--start` launcher it spawned exits once Java runs and stays a zombie (its Popen is never waited for), and psutil
    raises ZombieProcess for a zombie's command line: when the scan reaches it first, every retry fails and the server
    is reported as not started (seen once in CI, under load). Later sagemaker-inference releases skip zombies in
    that scan themselves (the 1.10.1 of pytorch-2.6.0 does); this gives the older toolkits of the EIA images the same."""
    psutil = mms.psutil  # the toolkit's own import: this entry point imports nothing beyond the toolkit

    def live_processes(*args, **kwargs):
        for process in psutil.process_iter(*args, **kwargs):
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    yield process
            except psutil.Error:
                continue

    scan = type(psutil)("psutil")  # a module object: the toolkit reads psutil.STATUS_ZOMBIE and the like from it
    scan.__dict__.update(psutil.__dict__)
    scan.process_iter = live_processes
    mms.psutil = scan


def main(work_dir):
    # The toolkits put their model store under the current directory when they are imported.
    os.chdir(work_dir)
    # PYTHONPATH named this repository only so that this module could be found; the toolkit passes
    # PYTHONPATH on to the model server's workers, which in the image see the handler's code/ only.
    os.environ.pop("PYTHONPATH", None)
    name = toolkit()
    if model_server(name) == "torchserve":
        from sagemaker_pytorch_serving_container import torchserve

        # Hard-coded to /etc/sagemaker-ts.properties, which only root can write outside a container.
        torchserve.TS_CONFIG_FILE = os.path.join(work_dir, TS_CONFIG)
    else:
        from sagemaker_inference import model_server as mms

        # Hard-coded to /etc/sagemaker-mms.properties; start_model_server() reads the module attribute.
        mms.MMS_CONFIG_FILE = os.path.join(work_dir, MMS_CONFIG)
        # MMS 1.1.2 logs with log4j 1.2, which cannot read the toolkit's log4j2.xml, and the 1.1.0 toolkit's
        # log4j.properties logs the workers to files only: a 1.2 config (logging only) when LocalEndpoint gives one.
        if os.environ.get(MMS_LOG_CONFIG_ENV):
            mms.DEFAULT_MMS_LOG_FILE = os.environ[MMS_LOG_CONFIG_ENV]
        # sagemaker-inference 1.1.0 (mxnet-inference-eia 1.4.1) configures the inference address only, so MMS binds
        # its management API to its default, 127.0.0.1:8081: a fixed port that any other server may hold. Later
        # toolkits put it on the inference port (Environment.management_http_port); MMS reads MMS_* variables.
        from sagemaker_inference import environment

        if os.environ.get(MMS_MANAGEMENT_ENV) and not hasattr(environment.Environment(), "management_http_port"):
            os.environ["MMS_MANAGEMENT_ADDRESS"] = os.environ[MMS_MANAGEMENT_ENV]
        _skip_zombies_in_the_server_scan(mms)
    if name == MXNET_TOOLKIT:
        from sagemaker_mxnet_serving_container import serving
    else:
        from sagemaker_pytorch_serving_container import serving

    serving.main()


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
