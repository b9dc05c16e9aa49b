"""Slow checks for the answer-check pool's tests, in a module of their own: a pool worker
imports the module of the function it runs when it first unpickles it, and that import
counts against the check's time bound, so it must stay light (no conftest, no driver)."""

import os
import time

from prmtree.engine.answers.compare import math_match

HANG, CRASH = "\\sqrt{999}", "\\sqrt{666}"


def hang_or_crash(gold, pred):
    """Math-Verify, except that it hangs on HANG and kills its process on CRASH."""
    if pred == HANG:
        time.sleep(3600)
    if pred == CRASH:
        os._exit(3)
    return math_match(gold, pred)


def slow_math(gold, pred):
    time.sleep(0.5)
    return math_match(gold, pred)
