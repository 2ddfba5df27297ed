"""What the SageMaker PyTorch container runs at start, pointed at a local work directory.

Run as `python -m local_serving.container WORK_DIR` by LocalEndpoint, with the container's
environment already set (SAGEMAKER_BASE_DIR=WORK_DIR, SAGEMAKER_PROGRAM, ports, ...).
"""
import os
import sys


def main(work_dir: str) -> None:
    # The toolkit puts TorchServe's model store under the current directory at import time.
    os.chdir(work_dir)
    from sagemaker_pytorch_serving_container import serving, torchserve

    # The toolkit writes its TorchServe config to /etc, which only root can write outside a container.
    torchserve.TS_CONFIG_FILE = os.path.join(work_dir, "sagemaker-ts.properties")
    serving.main()


if __name__ == "__main__":
    main(sys.argv[1])
