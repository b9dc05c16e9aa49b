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


def slow_once(gold, pred):
    """Math-Verify, after sleeping ``s`` seconds the first time it sees ``SLOW:s:answer``
    (a marker file beside the test's tmp dir, named in the answer, remembers): a check slowed
    once, as by a loaded machine."""
    if pred.startswith("SLOW:"):
        _, seconds, marker, pred = pred.split(":", 3)
        if not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(float(seconds))
    return math_match(gold, pred)


def out_of_time_once(gold, pred):
    """Raises CheckTimedOut (Math-Verify's own alarm, as the pool sees it) the first time it
    sees ``TIMEOUT:marker:answer``; always for ``TIMEOUT:always:answer``."""
    from prmtree.engine.answers.pool import CheckTimedOut

    if pred.startswith("TIMEOUT:"):
        _, marker, pred = pred.split(":", 2)
        if marker == "always" or not os.path.exists(marker):
            if marker != "always":
                open(marker, "w").close()
            raise CheckTimedOut("out of time")
    return math_match(gold, pred)


def slow_retry_or_hang(gold, pred):
    """HANG hangs. ``TIMEOUT:marker:answer`` runs out of its own time the first time; the
    second time (its patient retry) it takes 2.5 s, long enough to be in flight when the hung
    check's bound kills the pool; after that it answers at once."""
    if pred == HANG:
        time.sleep(3600)
    if pred.startswith("TIMEOUT:"):
        _, marker, rest = pred.split(":", 2)
        if os.path.exists(marker) and not os.path.exists(marker + ".2"):
            open(marker + ".2", "w").close()
            time.sleep(2.5)
        if os.path.exists(marker):
            return math_match(gold, rest)
    return out_of_time_once(gold, pred)
