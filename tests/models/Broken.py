"""A model whose constructor fails."""


class Broken:
    def __init__(self):
        raise RuntimeError("cannot open weights.bin")
