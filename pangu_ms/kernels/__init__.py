"""Fused CPU kernels: C++ sources compiled here with the system compiler and run as MindSpore AOT ``Custom`` ops.

``build.py`` compiles a source once per machine into a cache; ``ops.py`` wraps each kernel pair (forward,
backward) as a primitive with its bprop. The math is the reference path's (``pangu_ms/backend.py``); the tests
check the two against each other and against numpy.
"""
