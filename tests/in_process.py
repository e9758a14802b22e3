"""Entry points run in the test process: TensorFlow loads once per session, not once per command."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Run:
    """What a command left: its exit status and its output."""
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def isolated(out, err):
    """Sends stdout and stderr to `out` and `err`, and puts back afterwards the global state a training run
    sets: the random seeds (Python's, NumPy's, TensorFlow's), op determinism and the mixed precision policy."""
    import tf_keras as keras
    from tensorflow.python.framework import config  # tf.config exports enable_op_determinism only

    determinism, states = config.is_op_determinism_enabled(), (random.getstate(), np.random.get_state())
    keras.backend.clear_session()  # layer names as in a fresh process
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
        clear_global_seed()
        if not determinism:
            config.disable_op_determinism()
        random.setstate(states[0])
        np.random.set_state(states[1])


def clear_global_seed() -> None:
    """Unsets TensorFlow's global seed if a test or command set it (keras.utils.set_random_seed), and only
    then: tf.random.set_seed also clears TensorFlow's kernel cache."""
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.compat.v1.get_seed(None)[0] is not None:
        tf.random.set_seed(None)


def exit_status(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """The exit status `sys.exit(main())` would give: main's return value, or the code of SystemExit."""
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors
        return e.code


def run(main: Callable[[list[str]], int], argv: list[str]) -> Run:
    """`main(argv)`, isolated, with its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with isolated(out, err):
        code = exit_status(main, argv)
    return Run(code, out.getvalue(), err.getvalue())
