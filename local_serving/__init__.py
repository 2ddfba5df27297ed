"""Serve a built model.tar.gz on localhost with the real SageMaker PyTorch serving stack, and call it."""
