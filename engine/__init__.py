"""prmtree's engine: problems, trees, steps, verification, values, search, driver, output.

Everything here is plain Python over the CPU. The search strategies (``search/``) are
pure state machines; the driver is the only part that awaits.
"""
