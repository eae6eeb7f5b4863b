"""Where the training images live on a GPU: on the device once, no per-batch host→device copy.

``place_images`` puts each image set on the device once — as uint8 where the normalisation can
be applied per batch on the device bit for bit as on the CPU (Tiny ImageNet's training set is
1.2 GB instead of 4.9 GB as float32), else as float32 — and falls back to pinned host memory,
copied per batch without blocking, when the sets do not fit. On the CPU the tensors are used
as they are. ``PlacedImages`` is indexed by the training loop and ``forward.accuracy`` like a
tensor.
"""

from __future__ import annotations

import torch

from latentgen import registry
from latentgen.devices import free_device_memory


# share of the device's free memory the image sets may take; the model, its optimizer state and
# the activations of a batch need the rest (tests lower it to force the pinned fallback)
DEVICE_DATA_FRACTION = 0.5
_CHECK_ROWS = 4096  # images per block when checking that the uint8 images give back the floats


def _normalisation(dataset: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``datasets.normalize``'s constants as tensors on ``device``. Tensors, not Python numbers:
    CUDA divides by a CPU scalar through its reciprocal, which is not bitwise the CPU's division."""
    spec = registry.get_dataset(dataset)
    scale = torch.tensor(float(spec.scale), dtype=torch.float32, device=device)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(-1, 1, 1)
    return scale, mean, std


def _normalise(raw: torch.Tensor, constants) -> torch.Tensor:
    """``datasets.normalize`` of a batch, in the same float32 operations and order."""
    scale, mean, std = constants
    return raw.to(torch.float32).div_(scale).sub_(mean).div_(std)


def as_uint8(x: torch.Tensor, dataset: str) -> torch.Tensor | None:
    """The uint8 images ``x`` (normalised float32, as ``load_dataset`` gives) was made from, or
    None when it was not made from such images. Checked: normalising the result gives back ``x``
    bit for bit, block by block (so the loop sees exactly the tensors it would see on the CPU)."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4:
        return None
    constants = _normalisation(dataset, torch.device("cpu"))
    scale, mean, std = constants
    out = torch.empty(x.shape, dtype=torch.uint8)
    for start in range(0, len(x), _CHECK_ROWS):
        block = x[start:start + _CHECK_ROWS]
        pixels = (block * std + mean) * scale
        rounded = pixels.round()
        if rounded.min() < 0 or rounded.max() > 255:
            return None
        out[start:start + _CHECK_ROWS] = rounded.to(torch.uint8)
        if not torch.equal(_normalise(out[start:start + _CHECK_ROWS], constants), block):
            return None
    return out


class PlacedImages:
    """Images the training loop and ``forward.accuracy`` index like a tensor (``len``, ``.device``,
    ``x[a:b]``, ``x[index_tensor]``), each batch coming out normalised float32 on ``device``.

    ``images`` are on ``device`` (uint8, normalised per batch there; or float32) or, when they do
    not fit, in pinned host memory, from which each batch is copied without blocking (gathered
    into one of two pinned staging buffers when the loop shuffles).
    """

    def __init__(self, images: torch.Tensor, device: torch.device, dataset: str):
        self.images = images
        self.device = torch.device(device)
        self.shape = images.shape
        self.on_device = images.device.type == self.device.type
        self._constants = _normalisation(dataset, self.device) if images.dtype == torch.uint8 else None
        self._staging: list[torch.Tensor] = []
        self._events: list = []
        self._turn = 0

    def __len__(self) -> int:
        return len(self.images)

    @property
    def where(self) -> str:
        return f"{'on the device' if self.on_device else 'pinned on the host'} as {str(self.images.dtype)[6:]}"

    def _gather(self, index: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Rows ``index`` of the host images, in a pinned staging buffer not in flight."""
        index = index.to("cpu")
        if not self._staging or len(self._staging[0]) < len(index):
            shape = (len(index), *self.images.shape[1:])
            self._staging = [torch.empty(shape, dtype=self.images.dtype).pin_memory() for _ in range(2)]
            self._events = [None, None]
        turn, self._turn = self._turn, 1 - self._turn
        if self._events[turn] is not None:
            self._events[turn].synchronize()  # its previous copy to the device has finished
        buffer = self._staging[turn][:len(index)]
        torch.index_select(self.images, 0, index, out=buffer)
        return buffer, turn

    def __getitem__(self, key) -> torch.Tensor:
        if self.on_device:
            raw = self.images[key]
        else:
            turn = None
            if isinstance(key, slice):
                host = self.images[key]  # a contiguous view of pinned memory
            else:
                host, turn = self._gather(key)
            raw = host.to(self.device, non_blocking=True)
            if turn is not None:
                self._events[turn] = torch.cuda.Event()
                self._events[turn].record()
        return raw if self._constants is None else _normalise(raw, self._constants)


def place_images(sets: list[torch.Tensor], dataset: str, device: torch.device | str):
    """Where the training loop reads each of ``sets`` (normalised float32 CPU tensors of
    ``dataset``) from; returns (placed sets, a description).

    - CPU: the tensors themselves (the loop slices them; nothing is copied).
    - CUDA: each set goes to the device once, as uint8 when it was made from uint8 images
      (``as_uint8``; normalised per batch on the device — Tiny ImageNet's training set is 1.2 GB
      instead of 4.9 GB), else as float32; only when they do not fit in ``DEVICE_DATA_FRACTION``
      of the device's free memory are they kept in pinned host memory and copied per batch.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return [x.to(device) for x in sets], f"{device.type} tensors"
    compact = [as_uint8(x, dataset) for x in sets]
    for use_uint8 in (True, False):
        chosen = [c if use_uint8 and c is not None else x for x, c in zip(sets, compact)]
        free = free_device_memory(device)  # this job's share of it, when runs share the GPU
        fits = sum(x.numel() * x.element_size() for x in chosen) <= DEVICE_DATA_FRACTION * free
        placed = [PlacedImages(x.to(device) if fits else _pinned(x), device, dataset) for x in chosen]
        # the device's normalisation must be the CPU's, bit for bit; else the float32 images
        first = placed[0]
        rows = slice(0, min(len(first), _CHECK_ROWS))
        if first._constants is None or torch.equal(first[rows].cpu(), sets[0][rows]):
            break
        placed = first = None  # frees the device copies before the float32 ones
    return placed, ", ".join(p.where for p in placed)


def _pinned(x: torch.Tensor) -> torch.Tensor:
    try:
        return x.pin_memory()
    except RuntimeError:  # pinned memory is scarce on some hosts: pageable copies still work
        return x
