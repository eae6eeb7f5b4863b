"""VeLPIC weight transfer (TMLR 2026, Section 7; SPEC §8).

``transfer_velpic(model, head, velpic)`` returns a deep copy of ``model`` whose pre-softmax
``nn.Linear`` (module name ``head``) has VeLPIC's class vectors as weight rows (cast to the
head's dtype) and a zero bias; ``keep_bias=True`` keeps the trained bias instead (the authors
log that variant too). The original model is not touched (``in_place=True``: it is the one edited,
for a caller that edits a copy already).

Row k of the new weight is the vector of class ``velpic.classes_[k]``, so VeLPIC must have been
fitted with the labels 0..K−1 that index the head's outputs.

Why the edited model reproduces VeLPIC exactly: the head computes ``F.linear(h, W, 0)`` in
float32 with ``W`` = the float32-rounded class vectors, and VeLPIC scores float32 activations
with the same float32 vectors through the same ``F.linear`` (see ``latentgen.probing.subspaces``). Adding
a zero bias changes no value, and both take the first index on ties. The one thing that could
still separate them is a different summation order inside the matrix product (another device,
or a BLAS kernel chosen by batch shape), which can only flip a row whose two best scores agree
to the last bit; the tests check equality on every row.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def transfer_velpic(model: nn.Module, head: str, velpic, keep_bias: bool = False, in_place: bool = False) -> nn.Module:
    """A copy of ``model`` (``in_place``: ``model``) with VeLPIC's class vectors as the weights of its
    ``head`` layer."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(velpic, "class_vectors_")
    try:
        layer = model.get_submodule(head)
    except AttributeError:
        raise ValueError(f"model {type(model).__name__} has no module named {head!r}") from None
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"head {head!r} is a {type(layer).__name__}, not an nn.Linear")
    vectors = velpic.class_vectors_
    if tuple(vectors.shape) != tuple(layer.weight.shape):
        raise ValueError(f"VeLPIC has {vectors.shape[0]} class vectors of width {vectors.shape[1]}, but head "
                         f"{head!r} has {layer.out_features} outputs of width {layer.in_features}")
    classes = list(velpic.classes_)
    if classes != list(range(layer.out_features)):
        raise ValueError(f"VeLPIC's classes must be 0..{layer.out_features - 1} to map onto the outputs of "
                         f"head {head!r}, got {classes[:10]}")
    if keep_bias and layer.bias is None:
        raise ValueError(f"head {head!r} has no bias to keep")

    edited = model if in_place else copy.deepcopy(model)
    new_head = edited.get_submodule(head)
    with torch.no_grad():
        new_head.weight.copy_(torch.as_tensor(vectors, dtype=new_head.weight.dtype))
        if new_head.bias is not None and not keep_bias:
            new_head.bias.zero_()
    return edited
