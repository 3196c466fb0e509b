"""The shared inputs of the two-process test: both sides build them from the same seed."""

from tests.oracle import random_inputs

CASE = {"mesh": "dp=2,sp=4", "layout": "zigzag"}


def inputs():
    q, k, v, dout, seg = random_inputs(17, 4, 64, 4, 2, 8, segments=True)
    return {"q": q, "k": k, "v": v, "dout": dout, "seg": seg}
