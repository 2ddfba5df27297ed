"""What a SageMaker PyTorch serving container runs at start, pointed at a local work directory.

Run by LocalEndpoint as `<runtime venv>/bin/python -m local_serving.container WORK_DIR`, in the
serving runtime's own venv (runtimes/), with the container's environment already set
(SAGEMAKER_BASE_DIR=WORK_DIR, SAGEMAKER_PROGRAM, ports, ...) and PYTHONPATH = this repository only.
It calls the image's own entry point, `sagemaker_pytorch_serving_container.serving.main()`:

- sagemaker-pytorch-inference 1.x (the EIA images, Python 3.6): multi-model-server (MMS);
- sagemaker-pytorch-inference 2.x (pytorch-inference 2.x images): TorchServe.

It must stay valid Python 3.6 and import nothing but the standard library and the runtime's toolkit.
"""
import importlib.util
import os
import sys

MMS_CONFIG = "sagemaker-mms.properties"
TS_CONFIG = "sagemaker-ts.properties"
MMS_LOG_CONFIG_ENV = "LOCAL_SERVING_MMS_LOG_CONFIG"  # set by LocalEndpoint


def model_server():
    """'torchserve' when the runtime's toolkit serves with TorchServe (2.x has a torchserve module), else 'mms' (1.x)."""
    # Looked up, not imported: an import error inside the 2.x module must surface, not select MMS.
    if importlib.util.find_spec("sagemaker_pytorch_serving_container.torchserve") is None:
        return "mms"
    return "torchserve"


def main(work_dir):
    # The toolkits put their model store under the current directory when they are imported.
    os.chdir(work_dir)
    # PYTHONPATH named this repository only so that this module could be found; the toolkit passes
    # PYTHONPATH on to the model server's workers, which in the image see the handler's code/ only.
    os.environ.pop("PYTHONPATH", None)
    if model_server() == "torchserve":
        from sagemaker_pytorch_serving_container import torchserve

        # Hard-coded to /etc/sagemaker-ts.properties, which only root can write outside a container.
        torchserve.TS_CONFIG_FILE = os.path.join(work_dir, TS_CONFIG)
    else:
        from sagemaker_inference import model_server as mms

        # Hard-coded to /etc/sagemaker-mms.properties; start_model_server() reads the module attribute.
        mms.MMS_CONFIG_FILE = os.path.join(work_dir, MMS_CONFIG)
        # MMS 1.1.2 logs with log4j 1.2, which cannot read the toolkit's log4j2.xml: a 1.2 config (logging only).
        if os.environ.get(MMS_LOG_CONFIG_ENV):
            mms.DEFAULT_MMS_LOG_FILE = os.environ[MMS_LOG_CONFIG_ENV]
    from sagemaker_pytorch_serving_container import serving

    serving.main()


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
