import numpy as np

__all__ = ["sizes_hold"]

def sizes_hold(fds: np.ndarray, names: np.ndarray, width: int, sizes: np.ndarray, threads: int, /) -> bool: ...
