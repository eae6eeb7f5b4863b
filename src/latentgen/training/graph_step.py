"""A training step replayed as one CUDA graph (``latentgen train --cuda-graph``; by default on a GPU
for the architectures whose graphed run a GPU has checked, :func:`use_graph`).

A small model's step is launch-bound on a GPU: a batch-32 MLP step took 2.0 ms on an H200 for
microseconds of arithmetic, nearly all of it the CPU launching some thirty kernels. A CUDA graph
launches them all at once. :class:`GraphedStep` captures one full batch's step — ``zero_grad``,
forward, loss, backward, ``optimizer.step()``, and the epoch's sums of loss and correct
predictions — on static tensors, and replays it for every full batch; the batch is copied into
those tensors first, and a short last batch runs eagerly into the same sums. With Adam the graph
ends at the backward pass and the eager ``optimizer.step()`` follows each replay (:data:`IN_GRAPH`):
a captured Adam step needs ``capturable=True``, whose on-device bias correction is not the eager
step's arithmetic, while the forward and backward passes hold most of the kernels.

The same numbers, by construction: the captured kernels are the eager ones on the same values,
and the first :data:`WARMUP` full batches of the run are real eager steps (on a side stream, as
capture requires; they initialise cuBLAS, autograd and the momentum buffers). Whether a GPU's
libraries keep that promise bit for bit is checked by ``tests/gpu`` (training with and without
the graph, every weight and log row equal). Refused where it cannot hold: a CPU device; another
optimizer; dropout (random numbers drawn inside a replayed graph).
"""

from __future__ import annotations

import torch
from torch import nn

WARMUP = 3  # eager full-batch steps before the capture (PyTorch's recipe uses 3 outside DDP)
# whether the optimizer's step is captured too (True), or runs eagerly after each replay (False)
IN_GRAPH = {torch.optim.SGD: True, torch.optim.Adam: False}


def use_graph(arch: str, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
              requested: bool | None = None) -> bool:
    """Whether a run replays its full batches as a CUDA graph. ``requested`` True: it must (a
    refusal is an error); False: never; None (the default): on a CUDA device where the
    architecture's ``cuda_graph`` flag is set (its graphed run, with its own optimizer, found
    bitwise equal to the eager one on a real GPU by tests/gpu), with that optimizer, and nothing
    refuses it (dropout from overrides)."""
    if requested is None:  # checked for the architecture's own optimizer: an override stays eager
        from latentgen import registry
        entry = registry.get_architecture(arch)
        return (getattr(device, "type", str(device)) == "cuda" and entry.cuda_graph
                and type(optimizer).__name__.lower() == entry.train.get("optimizer")
                and graph_refusal(model, optimizer, device) is None)
    refusal = graph_refusal(model, optimizer, device) if requested else None
    if refusal:
        raise ValueError(refusal)
    return bool(requested)


def graph_refusal(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> str | None:
    """Why this run cannot use a graphed step (None: it can)."""
    if device.type != "cuda":
        return f"--cuda-graph needs a CUDA device, not {device}"
    if type(optimizer) not in IN_GRAPH:
        return f"--cuda-graph supports {' and '.join(o.__name__ for o in IN_GRAPH)}, not {type(optimizer).__name__}"
    unused = tuple(getattr(model, "unused_in_forward", ()))  # modules a model keeps but never calls
    if any(_drops(m) for name, m in model.named_modules() if name.split(".")[0] not in unused):
        return "--cuda-graph does not support dropout (random numbers drawn inside a replayed graph)"
    return None


def _drops(module: nn.Module) -> bool:
    """Dropout as a module, or as our models' ``dropout`` rate (``F.dropout`` in their forward)."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    rate = getattr(module, "dropout", 0)
    return isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0


class GraphedStep:
    """One full batch's training step as a CUDA graph, with the epoch's sums (module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch_size: int, x_row: torch.Size,
                 device: torch.device, track_true: bool):
        refusal = graph_refusal(model, optimizer, device)
        if refusal:
            raise ValueError(refusal)
        self.model, self.optimizer, self.batch_size = model, optimizer, batch_size
        self.loss_fn = nn.CrossEntropyLoss()
        self.x = torch.empty((batch_size, *x_row), dtype=torch.float32, device=device)
        self.y = torch.empty(batch_size, dtype=torch.int64, device=device)
        self.y_true = torch.empty(batch_size, dtype=torch.int64, device=device) if track_true else None
        # the epoch's sums, as train_one_epoch keeps them; the eager short batch adds into them too
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.correct_true = torch.zeros((), dtype=torch.int64, device=device)
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.step_in_graph = IN_GRAPH[type(optimizer)]

    def reset_sums(self) -> None:
        for total in (self.loss_sum, self.correct, self.correct_true):
            total.zero_()

    def _body(self, step: bool = True) -> None:
        """The eager loop's step on the static tensors (train_one_epoch), sums included; ``step``
        False: without ``optimizer.step()`` (the sums do not depend on it: the output is the step's
        input's)."""
        self.optimizer.zero_grad()
        output = self.model(self.x)
        loss = self.loss_fn(output, self.y)
        loss.backward()
        if step:
            self.optimizer.step()
        with torch.no_grad():
            pred = output.argmax(1)
            self.loss_sum += loss.detach().double() * self.batch_size
            self.correct += (pred == self.y).sum()
            if self.y_true is not None:
                self.correct_true += (pred == self.y_true).sum()

    def takes(self, xb: torch.Tensor) -> bool:
        """Whether this full batch can run in the graph: its memory layout is the static input's (a
        convolution's kernels, so its rounding, follow the layout: another one runs eagerly)."""
        return (self.graph is None and self.eager_steps == 0) or xb.stride() == self.x.stride()

    def _load(self, xb: torch.Tensor, yb: torch.Tensor, tb: torch.Tensor | None) -> None:
        """Copy the batch into the static tensors, laid out as the first batch is (digits' images
        come channels-last: a fresh contiguous copy would convolve with other kernels)."""
        if self.graph is None and self.eager_steps == 0 and xb.stride() != self.x.stride():
            self.x = torch.empty_strided(xb.size(), xb.stride(), dtype=self.x.dtype, device=self.x.device)
        self.x.copy_(xb)
        self.y.copy_(yb)
        if self.y_true is not None:
            self.y_true.copy_(tb)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, tb: torch.Tensor | None) -> None:
        self._load(xb, yb, tb)
        if self.graph is None and self.eager_steps < WARMUP:
            self._warm_up()
            self.eager_steps += 1
            return
        if self.graph is None:
            self.graph = self._capture()
        self._replay()
        if not self.step_in_graph:  # the eager step reads the gradients the replay wrote
            self.optimizer.step()

    def _warm_up(self) -> None:
        """One whole eager step, on a side stream (as capture requires)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self) -> torch.cuda.CUDAGraph:
        self.optimizer.zero_grad()  # gradients allocated inside the graph's memory pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the kernels; nothing runs until replay
            self._body(step=self.step_in_graph)
        return graph

    def _replay(self) -> None:
        self.graph.replay()
