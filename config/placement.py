"""Which of an environment's serving stacks holds a model.

A model pinned in its file (`serving_stack: N`) stays there. Any other model goes where rendezvous hashing of
its name puts it among `serving_stacks` (config/app.yaml): the place depends on the name and the count only,
so adding or removing a model moves no other, and raising the count moves only the models the new stacks win
(about 1 in count+1). Moving a deployed model to another stack recreates its endpoint (`make diff` warns):
pin it first.
"""
import hashlib

from config.schema import SERVING_STACK


def serving_stack_of(model_name: str, serving_stacks: int) -> int:
    """1..serving_stacks, stable across machines and Python runs (sha256, not hash())."""
    return max(range(1, serving_stacks + 1), key=lambda k: hashlib.sha256(f"{model_name}/{k}".encode()).digest())


def serving_stack_id(number: int) -> str:
    """Serving (the first: the one stack there was before the split, and still the stage's shared parts), Serving02..."""
    return SERVING_STACK if number == 1 else f"{SERVING_STACK}{number:02d}"
