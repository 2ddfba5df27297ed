"""The build step: a PyTorch model becomes a reproducible SageMaker model.tar.gz with a manifest."""
