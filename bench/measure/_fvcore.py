"""fvcore, imported once with its import-time noise silenced.

`fvcore.nn/__init__` scripts a focal loss with `torch.jit.script`, which torch 2.13 flags with a
DeprecationWarning on every import; nothing here uses TorchScript.
"""
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import conv_flop_jit, get_shape, linear_flop_jit

__all__ = ["FlopCountAnalysis", "conv_flop_jit", "get_shape", "linear_flop_jit"]
