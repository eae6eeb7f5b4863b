"""Timing a configuration's jobs on this machine (``latentgen.workflow.estimate``'s first step).

:func:`measure` times a short real sample of every kind of job the config plans, with the
project's own code, on this machine and the estimate's device; the estimate module's docstring
says what each sample is and how it is scaled. Torch is imported here, in the functions.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentgen import registry
from latentgen.options.train import OVERRIDES
from latentgen.options import command_parser
from latentgen.workflow.config import check_command_options

COLD_IMPORT_S = 3.0  # per job without prefork, when this process cannot time the imports itself
# sample sizes and time budgets (latentgen.workflow.estimate's docstring)
TRAIN_STEPS, TRAIN_BUDGET_S, ACTIVATION_BUDGET_S, SAMPLE_BYTES = 300, 2.0, 0.5, 48 << 20
PROBE_ROWS_PER_CLASS, PROBE_BYTES, FIT_CLASSES, SCORE_ROWS = 384, 96 << 20, 4, 1024
SPECTRUM_ALPHA, REPAIR_ROWS, EIGH_MAX = 1.0, 256, 1024
# On a GPU the probe sample is the whole layer (every class, up to GPU_PROBE_BYTES of rows; the
# ResNet-18's widest, 50,000 × 16,384, is 3.05 GiB) and GPU_SCORE_ROWS scored rows: small matrices
# leave a GPU mostly idle, so times taken at the CPU's sample sizes and scaled by flops overstate a
# full-size layer many times (measured on an H200: 3-50×; the fit at the CPU's flop rates more still).
GPU_PROBE_BYTES, GPU_SCORE_ROWS = 7 << 29, 16384
# families that fit on their own (the baselines): BASELINE_ROWS rows at full width, scaled linearly
# in rows, but k-NN (each scored row against every training row) quadratically. On a GPU a small
# sample's time is mostly fixed (launches, a d×d decomposition) and scales by much less than its
# rows: a second sample GPU_BASELINE_SCALE times the rows separates the fixed part from the part
# that grows (:func:`two_point_seconds`), unless the first already took GPU_BASELINE_TWO_POINT_S.
BASELINE_ROWS, QUADRATIC_FAMILIES = 512, ("knn",)
GPU_BASELINE_SCALE, GPU_BASELINE_TWO_POINT_S = 4, 1.0
SHARED_BATCHES = 1000  # per run, timing runs that share a GPU (about 2 s of a launch-bound MLP on an H200)


@dataclass
class ModelCost:
    """Seconds per job of one configured model (from :func:`measure`, or given by a test)."""
    train_start: float  # per training run: data, model, the first optimizer, the epoch-0 evaluation
    train_epoch: float  # per epoch: the steps, the test evaluation, the resume state
    checkpoint: float  # per saved checkpoint
    forward: float  # per probed checkpoint: the forward passes of every layer into memory (and the file with keep)
    probe: float  # per tracked checkpoint: the probes of probe_args (the input layer's included)
    repair: float = 0.0  # per repaired checkpoint
    probe_final: float | None = None  # the final checkpoint's probes with the 2025 families (config probes)
    probe_final_labels: float = 0.0  # ... and per extra label set (a clean model's -exp3 subspaces)
    relabel: float = 0.0  # per relabel-and-retrain job
    activation_bytes: int = 0  # one checkpoint's activations: (train + test) × Σ widths × 4
    data: str = "given"  # where the sample's images came from ("random" is flagged)
    load: float = 0.0  # per probe job: the dataset and the labels, once
    probe_input: float = 0.0  # the part of ``probe`` on the input layer, fit once per job (reused after)
    # train_shared_runs concurrent runs' aggregate rate over one run's (measured on the GPU; 1: unshared)
    train_shared_speedup: float = 1.0
    train_shared_runs: int = 1


def _timed(step, device) -> float:
    """Wall seconds of ``step()``, the GPU synchronised before and after."""
    import torch
    sync = torch.cuda.synchronize if getattr(device, "type", str(device)) == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def _seconds(step, device, budget: float, most: int, threads: int = 1) -> float:
    """Median wall seconds of ``step()`` repeated for up to ``budget`` s (at least once, at most
    ``most`` times; a median: other processes make single timings jumpy). With ``threads`` > 1 on
    the CPU also with one thread, interleaved, and the faster median is taken: on cores other
    processes keep busy, OpenMP's waiting threads can make a job's threads 10-20× slower than one
    (seen on this project's shared 2-core machine); on idle cores they are never slower."""
    counts = [threads, 1] if threads > 1 and getattr(device, "type", device) == "cpu" else [threads]
    times, begin = {n: [] for n in counts}, time.perf_counter()
    while not times[counts[-1]] or (len(times[counts[-1]]) < most and time.perf_counter() - begin < budget):
        for n in counts:
            _threads(n) if len(counts) > 1 else None
            times[n].append(_timed(step, device))
    _threads(threads) if len(counts) > 1 else None
    return min(sorted(t)[len(t) // 2] for t in times.values())


def _threads(n: int):
    """A job's threads as Snakemake gives them: torch's and BLAS's (it sets OMP_/OPENBLAS_NUM_THREADS)."""
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(max(1, min(int(n), os.cpu_count() or 1)))
    threadpool_limits(torch.get_num_threads(), user_api="blas")


class _Data:
    """Images of one dataset for the samples: real when found, else random of the real shape."""

    def __init__(self, cfg: dict, name: str, rows: int):
        import torch
        from latentgen.data.datasets import get_spec, load_dataset, normalize
        spec = self.spec = get_spec(name)
        self.n_train, self.n_test = spec.train_size, spec.test_size
        prepared, root = Path(cfg["outdir"]) / "data" / f"{name}.npz", Path(cfg.get("data_root", "data"))
        raw = not spec.needs_root or (name != "tiny_imagenet" and all(p.exists() for p in spec.expected_files(root)))
        start = time.perf_counter()
        if prepared.is_file() or raw:
            data = load_dataset(name, prepared=prepared) if prepared.is_file() else load_dataset(name, data_root=root)
            self.source = "prepared" if prepared.is_file() else "raw"
            self.train_x, self.train_y, self.test_x = data.train_x, data.train_y, data.test_x
            self.load_seconds = time.perf_counter() - start
            return
        self.source = "random"  # normalising is most of loading a prepared file: timed, scaled to the full size
        shape = (min(rows, self.n_train), spec.in_channels, spec.image_size, spec.image_size)
        pixels = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        self.train_x = normalize(pixels.numpy(), spec)
        self.load_seconds = (time.perf_counter() - start) * (self.n_train + self.n_test) / len(pixels)
        self.train_y = torch.from_numpy(np.random.default_rng(0).integers(0, spec.num_classes, len(pixels)))
        self.test_x = self.train_x[:min(len(pixels), self.n_test)]


def _train_config(model: dict):
    from latentgen.training.hyperparameters import default_train_config
    options = check_command_options("train", model.get("train_args", {}), "train_args")
    overrides = {k: v for k, v in options.items() if k in OVERRIDES}
    extra = {**(options.get("model_options") or {}),
             **({"dropout": options["dropout"]} if options.get("dropout") is not None else {})}
    overrides.update({"model_options": extra} if extra else {})
    return default_train_config(model["arch"], model["dataset"], hparams=options.get("hparams", "code"), **overrides)


def _save_rate(folder: Path) -> float:
    """Bytes per second of ``torch.save`` of a state dict into ``folder``."""
    import torch
    blob, path = {"w": torch.zeros(16 << 20)}, folder / "rate.pt"  # 64 MiB
    seconds = _seconds(lambda: torch.save(blob, str(path)), "cpu", 0.5, 3)
    path.unlink()
    return (64 << 20) / max(seconds, 1e-6)


def _measure_train(model_cfg, data: _Data, device, threads: int, save_rate: float) -> dict:
    import torch
    from latentgen.models import forward
    from latentgen.models.architectures import build_model
    from latentgen.training.placement import place_images
    from latentgen.training.graph_step import WARMUP, GraphedStep, use_graph
    from latentgen.training.loop import make_optimizer, train_one_epoch
    _threads(threads)
    config = _train_config(model_cfg)
    n = config.train_subset or data.n_train
    model = build_model(config.arch, config.dataset, seed=0, **config.model_options).to(device)
    optimizer = make_optimizer(config, model.parameters())
    (x, test_x), _ = place_images([data.train_x, data.test_x[:256]], config.dataset, device)
    y, bs = data.train_y.to(device), config.batch_size
    # the step the training job takes: a CUDA graph where `latentgen train` uses one (its train_args)
    requested = check_command_options("train", model_cfg.get("train_args", {}), "train_args").get("cuda_graph")
    graphed = GraphedStep(model, optimizer, bs, x.shape[1:], device, False) if use_graph(
        config.arch, model, optimizer, device, requested) else None
    warm = bs * (WARMUP + 1 if graphed else 1)  # the graph's eager steps and its capture, untimed
    train_one_epoch(model, optimizer, x, y, bs, max_samples=min(len(x), warm), graphed=graphed)
    one = _timed(lambda: train_one_epoch(model, optimizer, x, y, bs, max_samples=bs, graphed=graphed), device)
    chunk = min(len(x), bs * max(1, min(4, int(0.5 / max(one, 1e-6)))))  # the same first rows again and again
    per_chunk = _seconds(lambda: train_one_epoch(model, optimizer, x, y, bs, max_samples=chunk, graphed=graphed),
                         device, TRAIN_BUDGET_S, TRAIN_STEPS // -(-chunk // bs), threads)
    test_y = torch.zeros(len(test_x), dtype=torch.long, device=device)
    per_image = _seconds(lambda: forward.accuracy(model, test_x, test_y, 1000, device=device), device,
                         0.2, 5, threads) / len(test_x)
    # the repair sweep scores each edit from the features (forward_head alone) where it can
    features = forward.FeatureBatches.of(model, test_x, 1000, list(forward.linear_layers(model)))
    head_image = per_image if features is None else _seconds(
        lambda: forward.predict(model, test_x, 1000, features=features), device, 0.2, 5, threads) / len(test_x)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    optim = sum(t.numel() * t.element_size() for s in optimizer.state_dict()["state"].values()
                for t in s.values() if isinstance(t, torch.Tensor))
    epoch = -(-n // bs) * per_chunk / -(-chunk // bs) + data.n_test * per_image + (state + optim) / save_rate
    return {"eval_image": per_image, "head_image": head_image, "epoch": epoch, "checkpoint": state / save_rate,
            "n_train": n, "start": data.load_seconds + data.n_test * per_image, "model": model.cpu().eval()}


def _measure_activations(model, data: _Data, n_train: int, cfg: dict, device, threads: int, folder: Path) -> dict:
    """Seconds per checkpoint of the probe job's forward passes into memory
    (``checkpoint_activations.CheckpointActivations``), on a sample; with ``activations: keep``
    also the HDF5 export (``activations.write_split``) and its read back."""
    import h5py
    from latentgen.probing.activations import host_blocks, write_split
    from latentgen.models.forward import check_layers, layer_sizes
    _threads(threads)
    options = check_command_options("activations", cfg.get("activation_args", {}), "activation_args")
    bs, compression = options.get("batch_size", 500), options.get("compression", "lzf")
    model = model.to(device).eval()
    layers = check_layers(model, None)
    widths = layer_sizes(model, layers)
    part = data.train_x[:max(1, min(bs * 2, SAMPLE_BYTES // (4 * sum(widths.values()))))]

    def forward():  # as CheckpointActivations gathers a group of layers
        arrays = {layer: np.empty((len(part), widths[layer]), dtype=np.float32) for layer in layers}
        for start, blocks in host_blocks(model, part, layers, bs):
            for layer in layers:
                arrays[layer][start:start + len(blocks[layer])] = blocks[layer]

    per_image = _seconds(forward, device, ACTIVATION_BUDGET_S, 20, threads) / len(part)
    read = 0.0
    if cfg.get("activations") == "keep":  # the export: written, then probed from the file
        path, groups = folder / "sample.h5", []
        with h5py.File(path, "w") as h5:
            def write():
                groups.append(f"s{len(groups)}")
                write_split(h5, groups[-1], part, model, layers, bs, compression)
            per_image = _seconds(write, device, ACTIVATION_BUDGET_S, 20, threads) / len(part)
        with h5py.File(path, "r") as h5:
            read = _timed(lambda: [h5[f"{g}/{layer}"][...] for g in groups for layer in layers], "cpu")
        path.unlink()
        read /= len(groups) * len(part) * sum(widths.values())
    total = n_train + data.n_test
    return {"seconds": total * per_image, "widths": widths, "bytes": total * sum(widths.values()) * 4,
            "read_per_value": read}


def _spectrum_r(e: int, variance: float) -> int:
    """r of the random activations' spectrum (variances (1+j)^-2α, j < e) at ``variance``."""
    lam = (1.0 + np.arange(max(e, 1))) ** (-2 * SPECTRUM_ALPHA)
    return int(min(e, np.searchsorted(np.cumsum(lam) / lam.sum(), variance, side="right") + 1))


def _flop_weights() -> tuple[float, float]:
    """Seconds per flop of one thread's eigendecomposition (e³) and Gram product (n·d·e), float64."""
    import scipy.linalg
    from threadpoolctl import threadpool_limits
    X = np.random.default_rng(0).standard_normal((2048, 384))
    with threadpool_limits(1, user_api="blas"):
        gram, G = _seconds(lambda: X.T @ X, "cpu", 0.2, 5) / (2048 * 384 * 384), X.T @ X
        eig = _seconds(lambda: scipy.linalg.eigh(G, driver="evd", check_finite=False), "cpu", 0.3, 5) / 384 ** 3
    return eig, gram


def _context(m: int, k: int, d: int, options, rows: np.ndarray | None = None):
    """A ``probing.LayerContext`` of ``m`` random rows per class of width ``d`` (or ``rows``), train = test."""
    from latentgen.probing.contexts import LayerContext
    if rows is None:
        rng = np.random.default_rng(d)
        scales = ((1.0 + rng.permutation(d)) ** -SPECTRUM_ALPHA).astype(np.float32)
        if _is_cuda(options.device) and m * k * d * 4 > SAMPLE_BYTES:  # drawn there: 3 GB took 15 s on a CPU core
            import torch
            drawn = torch.randn((m * k, d), generator=torch.Generator(options.device).manual_seed(d),
                                device=options.device)
            rows = drawn.abs_().mul_(torch.from_numpy(scales).to(options.device)).cpu().numpy()
            del drawn  # the host copy is what a probe job holds
        else:
            rows = rng.standard_normal((m * k, d), dtype=np.float32)  # in place: a GPU sample is GBs
            np.abs(rows, out=rows)
            rows *= scales
    labels = dict.fromkeys(("test", "train_corrupted", "train_true"), np.repeat(np.arange(k), m)[:len(rows)])
    return LayerContext(types.SimpleNamespace(array=lambda split, layer: rows), "layer", ("m", "d", 0.0, 1, 0),
                        labels, np.arange(k), options)


def _is_cuda(device) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def probe_sample(d: int, k: int, n_train: int, gpu: bool) -> tuple[int, int, int, int]:
    """(rows per class of the real layer, classes sampled, rows per sampled class, rows scored)
    of the probe sample of a layer of width ``d`` with ``k`` classes and ``n_train`` rows."""
    n_k = max(1, n_train // k)
    if gpu:  # as many whole classes as GPU_PROBE_BYTES holds (at least two: a probe needs two classes)
        k_s = max(2, min(k, GPU_PROBE_BYTES // (4 * n_k * d)))
        m = max(2, min(n_k, GPU_PROBE_BYTES // (4 * k_s * d)))
        return n_k, k_s, m, min(m * k_s, GPU_SCORE_ROWS)
    k_s = min(k, FIT_CLASSES)
    m = max(2, min(n_k, PROBE_ROWS_PER_CLASS, PROBE_BYTES // (4 * k_s * d)))
    return n_k, k_s, m, min(m * k_s, SCORE_ROWS)  # the fit is shared: few rows scored (MASC: rows × d × Σr)


def fit_seconds(fit: float, d: int, k: int, n_k: int, k_s: int, m: int, weights, workers: int, gpu: bool) -> float:
    """The shared MASC/VeLPIC fit of a whole layer from ``fit`` seconds on ``k_s`` classes of ``m`` rows.

    CPU: per class the flop model w_e·e³ + w_g·n_k·d·e (e = min(d, n_k)) at the measured one-thread
    rates, plus the sample's remainder scaled by rows; classes decomposed ``workers`` at a time (one
    per BLAS thread). GPU: classes one after another, each the sample's time per class (whole
    classes unless two exceed GPU_PROBE_BYTES, then scaled by the same flop count's ratio)."""
    (e, e_s), (w_e, w_g) = (min(d, n_k), min(d, m)), weights
    model, model_s = w_e * e ** 3 + w_g * n_k * d * e, w_e * e_s ** 3 + w_g * m * d * e_s  # per class
    if gpu:
        return k * fit / k_s * model / model_s
    return k * (model + max(0.0, fit / k_s - model_s) * n_k / m) / min(k, workers)


def two_point_seconds(t1: float, u1: float, t2: float, u2: float, u: float) -> float:
    """Seconds at size ``u`` from ``t1`` s at size ``u1`` and ``t2`` s at ``u2`` > ``u1``: a fixed part
    plus one proportional to size (the slope never negative; never under either timing beyond ``u1``;
    up to ``u1`` in proportion, as a single sample is scaled)."""
    if u <= u1:
        return t1 * u / u1
    slope = max(0.0, (t2 - t1) / (u2 - u1))
    return max(t1, t2, t1 + slope * (u - u1))


def _measure_probe_layer(d, k, n_train, n_test, families: dict, options, weights, workers: int) -> dict:
    """Seconds on a full layer of width ``d``: ``fit`` (the shared decomposition) and each family's own."""
    n_k, k_s, m, scored = probe_sample(d, k, n_train, _is_cuda(options.device))
    ctx = _context(m, k_s, d, options)
    fit = _timed(lambda: ctx.probes, options.device)
    out = {"fit": fit_seconds(fit, d, k, n_k, k_s, m, weights, workers, _is_cuda(options.device))}
    e, e_s = min(d, n_k), min(d, m)
    r = k * (_spectrum_r(e, options.variance) + 1) / (k_s * (_spectrum_r(e_s, options.variance) + 1))
    scoring = _context(m, k_s, d, options, ctx.train[:scored])
    scoring.__dict__.update({key: v for key, v in ctx.__dict__.items() if key in ("subspaces", "probes")})
    m_b = max(2, min(n_k, BASELINE_ROWS // k, SAMPLE_BYTES // (4 * k * d)))
    # on a GPU a second, larger sample (GPU_BASELINE_SCALE × the rows, as memory allows) where it adds rows
    m_2 = min(n_k, GPU_BASELINE_SCALE * m_b, max(m_b, GPU_PROBE_BYTES // (4 * k * d))) if _is_cuda(options.device) else m_b
    small = larger = None
    for name, (family, entry) in families.items():
        test_only = getattr(entry, "test_only", False)
        predicted, ways = (n_test, 1) if test_only else (n_train + n_test, 2)  # rows scored; the sample's: ways × rows
        try:
            if getattr(entry, "shares_fit", name in ("masc", "velpic")):  # scores only: the fit is shared
                out[name] = _timed(lambda: family(scoring), options.device) * predicted / (ways * scored) * (
                    k / k_s if name == "velpic" else r)
                continue
            small = small or _context(m_b, k, d, options)

            def size(m):  # the work's size: rows (fit + scored), k-NN's scored × training rows
                return ways * (m * k) ** 2 if name in QUADRATIC_FAMILIES else (1 + ways) * m * k
            full = n_train * predicted if name in QUADRATIC_FAMILIES else n_train + predicted
            t1 = _timed(lambda: family(small), options.device)
            if m_2 > m_b and t1 < GPU_BASELINE_TWO_POINT_S and full > size(m_b):
                larger = larger or _context(m_2, k, d, options)
                out[name] = two_point_seconds(t1, size(m_b), _timed(lambda: family(larger), options.device),
                                              size(m_2), full)
            else:
                out[name] = t1 * full / size(m_b)
        except Exception:  # a family this synthetic layer cannot feed: not timed (said in the output)
            out[name] = None
    return out


def _eigh_seconds(dim: int, cache: dict) -> float:
    """One ``repair.factors.sorted_eigh`` of a dim×dim factor: timed up to EIGH_MAX, cubic beyond."""
    import torch
    from latentgen.repair.factors import sorted_eigh
    size = min(dim, EIGH_MAX)
    if size not in cache:
        a = torch.randn(size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size)).cov()
        cache[size] = _seconds(lambda: sorted_eigh(a), "cpu", 0.2, 3)
    return cache[size] * (dim / size) ** 3


def _measure_repair(model, arch, data: _Data, n_train: int, cfg: dict, device, eval_image: float,
                    head_image: float, velpic_fit: float, cache: dict) -> float:
    """Seconds of one ``latentgen repair`` job (module docstring)."""
    import torch
    from latentgen.repair import collect_factors
    rep, spec = cfg["repair"], registry.get_architecture(arch)
    sets = [registry.expand_layer_set(arch, s) for s in rep.get("layer_sets", {}).get(arch)
            or registry.repair_layer_sets(arch)]
    layers = [name for name in spec.linear_layers if any(name in s for s in sets)]
    modules = dict(model.named_modules())
    rows = min(REPAIR_ROWS, len(data.train_x))
    factors = _timed(lambda: collect_factors(model.to(device), data.train_x[:rows], layers, device=device,
                                             fisher=rep.get("fisher") or "exact", labels=data.train_y[:rows]),
                     device) * (rep.get("factor_subset") or n_train) / rows
    seconds = data.load_seconds + factors
    for name in layers:
        seconds += _eigh_seconds(modules[name].in_features, cache) + _eigh_seconds(modules[name].out_features, cache)
    a = torch.randn(768, 768, dtype=torch.float64)
    cache["gemm"] = cache.get("gemm") or 2 * 768 ** 3 / _seconds(lambda: a @ a, "cpu", 0.2, 5)
    edit = {n: 4 * modules[n].out_features * modules[n].in_features * (modules[n].out_features
            + modules[n].in_features) / cache["gemm"] for n in layers}
    features = eval_image * (n_train + data.n_test)  # once (FeatureBatches; eval_image == head_image without)
    evaluation = head_image * (n_train + data.n_test)  # per scored model: the head alone
    velpic = head_image * n_train + velpic_fit
    seconds += features + evaluation + (1 + (modules[spec.head].bias is not None)) * (evaluation + velpic)  # references
    for method in rep.get("methods") or registry.DEFAULT_REPAIRS:
        for s in (s for s in sets if not (method == "kfac_velpic" and spec.head in s)):  # the head: velpic's
            each = evaluation + sum(edit[n] for n in s) + (velpic if method == "kfac_velpic" else 0.0)
            each += factors * (len(s) - 1) / len(layers) if method == "kfac_reestimate" else 0.0
            seconds += len(rep.get("rhos") or registry.DEFAULT_RHOS) * each
    return seconds


def _families(cfg_families, no_transfer=False):
    """({name: (layer family, registry entry)}, forward passes over the images per checkpoint family)."""
    names = list(cfg_families or [n for n, f in registry.PROBE_FAMILIES.items() if f.default])
    entries = [registry.get_probe_family(n) for n in names]
    layer = {f.name: (registry.load(f.impl), f) for f in entries if not f.needs_checkpoint}
    return layer, sum(f.needs_checkpoint and not no_transfer for f in entries)


def _measure_shared_speedup(model_cfg: dict, runs: int, cache: dict) -> float:
    """Aggregate rate of ``runs`` concurrent training runs over one run's, on the GPU
    (``training.shared_device.shared_speedup``; SHARED_BATCHES batches each, random images)."""
    from latentgen.training.shared_device import shared_speedup
    return shared_speedup(model_cfg["arch"], model_cfg["dataset"], runs,
                          SHARED_BATCHES * _train_config(model_cfg).batch_size, "cuda", cache)


def measure(cfg: dict, *, device="auto", cores: int | None = None, progress=None,
            shares: dict[str, int] | None = None) -> tuple[dict[str, ModelCost], dict]:
    """Per-job seconds of every configured model on this machine (module docstring); on a GPU also the
    speed-up of the models whose training runs share one (``shares``: model -> runs per GPU)."""
    begin = time.perf_counter()
    cold = "torch" not in sys.modules
    import h5py  # noqa: F401  (timed with the rest: what a job without prefork imports)
    import sklearn.datasets  # noqa: F401
    import torch
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo, as every training job
    imports = time.perf_counter() - begin if cold else COLD_IMPORT_S  # (the prefork server preloads them all)
    from latentgen.devices import resolve_device
    from latentgen.probing.contexts import ProbeOptions
    say, dev = progress or (lambda message: None), resolve_device(device)
    threads = {k: min(int(v), cores or os.cpu_count() or 1) for k, v in cfg["threads"].items()}
    options = check_command_options("probe-run", cfg.get("probe_args", {}), "probe_args")
    grid_families, transfers = _families([n for g in options.get("families") or [] for n in
                                          (g if isinstance(g, list) else [g])], options.get("no_transfer", False))
    paper = cfg.get("probes")
    final_families, final_transfers = _families(paper.get("families"), False) if paper else ({}, 0)
    families = {**grid_families, **final_families}
    probe_options = ProbeOptions(options.get("variance", 0.99), options.get("sign", "all"),
                                 options.get("batch_size", 1000), dev)
    from threadpoolctl import threadpool_limits
    before, blas = torch.get_num_threads(), threadpool_limits(None)  # restored at the end
    costs, datasets, layer_cache, eigh_cache, untimed, layer_seconds, rates = {}, {}, {}, {}, set(), {}, {}
    try:
        with tempfile.TemporaryDirectory(prefix="latentgen-estimate-") as tmp:
            save_rate, weights = _save_rate(Path(tmp)), _flop_weights()
            if _is_cuda(dev):  # CUDA's, cuBLAS's and cuSOLVER's start-up and every family's first kernels
                _measure_probe_layer(64, 2, 256, 256, families, probe_options, weights, 1)  # are no layer's time
            for name, model in cfg["models"].items():
                if model["dataset"] not in datasets:
                    datasets[model["dataset"]] = _Data(cfg, model["dataset"], rows=4096)
                data = datasets[model["dataset"]]
                say(f"{name}: training steps ({data.source} data)")
                train = _measure_train(model, data, dev, threads["train"], save_rate)
                n_train, k, images = train["n_train"], data.spec.num_classes, train["n_train"] + data.n_test
                say(f"{name}: activations")
                acts = _measure_activations(train["model"], data, n_train, cfg, dev, threads["probe"], Path(tmp))
                say(f"{name}: probes")
                _threads(1)  # timed on one thread (the fit's model counts the job's parallel classes)
                layers = {}
                for layer, d in acts["widths"].items():
                    if (d, k, n_train) not in layer_cache:
                        layer_cache[d, k, n_train] = _measure_probe_layer(d, k, n_train, data.n_test, families,
                                                                          probe_options, weights, threads["probe"])
                    layers[layer] = layer_cache[d, k, n_train]
                    layer_seconds.setdefault(name, {})[layer] = layers[layer]
                    untimed.update(f for f, s in layers[layer].items() if s is None)
                read = images * sum(acts["widths"].values()) * acts["read_per_value"]
                head = dict(train["model"].named_modules())[registry.get_architecture(model["arch"]).head]
                passes = images * train["eval_image"] * (1 + (head.bias is not None))  # transfer, transfer_bias

                def fits(chosen, only=None):  # one label set's layer work (the shared fit once; skip_input families skip it)
                    shared = any(getattr(families[f][1], "shares_fit", f in ("masc", "velpic")) for f in chosen)
                    return sum(t["fit"] * shared + sum(t[f] or 0.0 for f in chosen if not (
                        layer == "input" and getattr(families[f][1], "skip_input", False)))
                        for layer, t in layers.items() if only is None or layer == only)
                probe = read + fits(grid_families) + transfers * passes
                final = (read + len(paper.get("fit_labels") or [1, 2]) * fits(final_families)
                         + final_transfers * passes) if paper else None
                repair = relabel = 0.0
                if name in cfg.get("repair", {}).get("models", []):
                    say(f"{name}: repair")
                    _threads(threads["repair"])
                    last = registry.get_architecture(model["arch"]).last_hidden
                    repair = _measure_repair(train["model"], model["arch"], data, n_train, cfg, dev,
                                             train["eval_image"], train["head_image"], layers[last]["fit"],
                                             eigh_cache)
                if name in cfg.get("relabel", {}).get("models", []):
                    epochs = cfg["relabel"].get("max_epochs") or command_parser("relabel").get_default("max_epochs")
                    relabel = (acts["seconds"] + data.load_seconds + fits(["masc"] if "masc" in families else [])
                               + epochs * train["epoch"])
                extra = [f for f in final_families if getattr(families[f][1], "extra_labels", False)]
                speedup, shared_runs = 1.0, 1
                if _is_cuda(dev) and (shares or {}).get(name, 1) > 1:
                    shared_runs = shares[name]
                    say(f"{name}: {shared_runs} training runs sharing the GPU")
                    speedup = _measure_shared_speedup(model, shared_runs, rates)
                costs[name] = ModelCost(train["start"], train["epoch"], train["checkpoint"], acts["seconds"], probe,
                                        repair, final, fits(extra) if paper else 0.0, relabel, acts["bytes"],
                                        data.source, load=data.load_seconds,
                                        probe_input=fits(grid_families, only=registry.INPUT_LAYER),
                                        train_shared_speedup=speedup,
                                        train_shared_runs=shared_runs)
    finally:
        torch.set_num_threads(before)
        blas.restore_original_limits()
    return costs, {"device": str(dev), "import_seconds": imports, "measure_seconds": time.perf_counter() - begin,
                   "untimed_probe_families": sorted(untimed), "layer_seconds": layer_seconds}
