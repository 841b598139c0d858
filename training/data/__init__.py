"""Data recipe for training: heterogeneous RS annotations -> image-caption pairs (RemoteCLIP B2C/M2B).

Modules: boxes (annotation readers), b2c (box-to-caption, chipping), m2b (mask-to-box),
readers (caption datasets), cleaning (caption purification), names (readable class names),
errors (DatasetError, MissingImageError); aid* and image_cache belong to the training loop.
Nothing imported here pulls in torch.
"""
