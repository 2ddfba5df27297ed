"""Post-deployment smoke test: is the SageMaker endpoint InService, and does it classify the example image?"""
from smoke_test.check import SmokeTestFailure, make_clients, run_smoke_test

__all__ = ["SmokeTestFailure", "make_clients", "run_smoke_test"]
