"""torcheia.jit.attach_eia, recorded: the real one returns a module whose graphs run on accelerator N."""
import torch

calls = []  # one {"module": type name, "device_ordinal": N, "training": bool} per attach_eia call
forwards = []  # one {"grad_enabled", "optimize", "input_shape"} per forward of an attached module


class AttachedModule(object):
    """The module, forwarding to it on the CPU, noting the mode each forward ran in."""

    def __init__(self, module, device_ordinal):
        self.module = module
        self.device_ordinal = device_ordinal

    def __call__(self, *inputs):
        forwards.append({
            "grad_enabled": torch.is_grad_enabled(),
            # torch.jit.optimized_execution(flag) sets this for its block (torch 1.5.1).
            "optimize": torch._C._get_graph_executor_optimize(),
            "input_shape": list(inputs[0].shape),
        })
        return self.module(*inputs)

    forward = __call__

    def __getattr__(self, name):
        return getattr(self.module, name)


def attach_eia(module, device_ordinal):
    calls.append({"module": type(module).__name__, "device_ordinal": device_ordinal, "training": module.training})
    return AttachedModule(module, device_ordinal)
