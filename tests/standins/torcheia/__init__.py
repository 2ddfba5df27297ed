"""Stand-in for torcheia 1.0.0, the EI add-on of the pytorch-inference-eia 1.5.1 image (tests only).

Same entry point as the real package: `torcheia.jit.attach_eia(module, device_ordinal)`. The model
runs on the CPU; `calls` and `forwards` record what the handler did, for the test driver to report.
"""
from . import jit  # noqa: F401  (torcheia.jit.attach_eia after `import torcheia`, as in the real package)
from .jit import calls, forwards  # noqa: F401
