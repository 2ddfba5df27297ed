"""Serve a built model.tar.gz on localhost with its serving image's own SageMaker stack (toolkit + model server,
in the runtime's venv), and call it."""
