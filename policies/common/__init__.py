"""Parts shared by several policies: flow matching (time embedding, loss, sampling) and the image encoder.

A policy package (``policies/<name>/``) imports from here instead of from another policy; this package registers
no policy itself.
"""
