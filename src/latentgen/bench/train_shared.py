"""Training runs sharing one device: the aggregate rate of K concurrent training processes.

How many runs of a model share a GPU well is a measured number (a model's ``runs_per_gpu``,
issue 16). For each K of ``--runs`` (default 1 2 4 8) this starts K training processes at once
(``latentgen.training.shared_device``: ``--arch`` on random images of ``--dataset``'s shape, on
``--device``, one CPU thread each, started together once all have warmed up).

Reported per K: ``runs{K}_samples_per_s``, the aggregate rate (K × ``--samples`` / the span from
the first start to the last end), and ``runs{K}_speedup``, that rate over one run's (one run is
always timed, first). The speed-up stops growing at the K the device (or the host's cores) can
feed: that K, or the smallest K within a few percent of the best, is the model's ``runs_per_gpu``.
``cuda_graph`` says whether the runs replayed a CUDA graph (the step ``latentgen train`` takes by
default there, ``training.graph_step.use_graph``, or ``--cuda-graph / --no-cuda-graph``): a
graphed run leaves less of the GPU to share.
"""

from __future__ import annotations

import argparse

from latentgen.training.shared_device import concurrent_rate

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="mlp", help="architecture (default mlp)")
    parser.add_argument("--dataset", default="mnist", help="dataset whose image shape and classes are used "
                                                            "(default mnist; no files are read)")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="numbers of concurrent runs to time (default 1 2 4 8)")
    parser.add_argument("--samples", type=int, default=32000, help="training samples per run (default 32000)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                        help="the runs' step, as latentgen train's option (default: the step train takes)")


def run(args: argparse.Namespace) -> dict:
    from latentgen import registry

    registry.get_architecture(args.arch)  # a clear error for an unknown name, before any process starts
    registry.get_dataset(args.dataset)
    if any(k < 1 for k in args.runs) or args.samples < 1:
        raise ValueError("--runs and --samples must be positive")
    result: dict = {"arch": args.arch, "dataset": args.dataset, "device": args.device, "samples": args.samples,
                    "cuda_graph": _graphed(args.arch, args.dataset, args.device, args.cuda_graph)}
    for k in sorted({1, *args.runs}):  # one run first: the speed-ups' reference
        result[f"runs{k}_samples_per_s"] = concurrent_rate(args.arch, args.dataset, k, args.samples, args.device,
                                                           cuda_graph=args.cuda_graph)
        result[f"runs{k}_speedup"] = result[f"runs{k}_samples_per_s"] / result["runs1_samples_per_s"]
    return result


def _graphed(arch: str, dataset: str, device: str, requested: bool | None = None) -> bool:
    """Whether the timed training runs of ``arch`` on ``device`` take the CUDA-graph step (by
    default, or as ``requested``; a refusal is an error here, before any process starts)."""
    from latentgen.devices import resolve_device
    from latentgen.models.architectures import build_model
    from latentgen.training.graph_step import use_graph
    from latentgen.training.hyperparameters import default_train_config
    from latentgen.training.loop import make_optimizer

    model = build_model(arch, dataset, seed=0)  # on the CPU: only its modules and optimizer are looked at
    return use_graph(arch, model, make_optimizer(default_train_config(arch, dataset), model.parameters()),
                     resolve_device(device), requested)
