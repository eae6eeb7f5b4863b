"""Probing a whole run: one `latentgen probe-run` job vs the per-checkpoint jobs it replaced.

A real MLP run on MNIST (``--dataset``; ``--train-subset`` images, ``--epochs`` epochs, checkpoints
on a dense grid, trained first and not timed) is probed both ways at the TMLR figures' settings (MASC,
VeLPIC, the transfer; the final checkpoint also with ``--final-families`` on both label sets), each
as the workflow runs it — fresh Python processes on ``--threads`` threads:

- ours: one ``python -m latentgen probe-run`` process for the run (activations in memory,
  input-layer rows fit once);
- reference: per checkpoint ``python -m latentgen activations`` (lzf HDF5) then
  ``python -m latentgen probe --delete-activations``, then ``python -m latentgen concat``: two
  processes per checkpoint, the file written, read back and deleted.

Both tables must be byte-identical (``identical``). The sides alternate ``--repeats`` times and
the median of each is reported, so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                        help=f"folder with MNIST/raw (default {DEFAULT_DATA_ROOT})")
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist",
                        help="mnist (default; from --data-root) or digits (scikit-learn's, for a quick check)")
    parser.add_argument("--train-subset", type=int, default=6000, help="training images (default 6000)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs trained, every one a checkpoint (default 4)")
    parser.add_argument("--final-families", default="masc,velpic,transfer,ncm",
                        help="families of the final checkpoint, on corrupted and true labels")
    parser.add_argument("--threads", type=int, default=1, help="threads per job (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each side (default 1)")


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "latentgen", *argv], capture_output=True, text=True,
                          env={**os.environ, "LATENTGEN_PREFORK": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"latentgen {argv[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    import json

    import torch

    from latentgen.data.datasets import load_dataset
    from latentgen.training.loop import train
    from latentgen.training.hyperparameters import default_train_config

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="latentgen-bench-") as tmp:
        tmp = Path(tmp)
        data = load_dataset(args.dataset, data_root=args.data_root if args.dataset == "mnist" else None)
        config = default_train_config("mlp", args.dataset, corruption=0.4, run=1,
                                      train_subset=min(args.train_subset, len(data.train_y)),
                                      max_epochs=args.epochs, grid_dense_until=args.epochs, grid_dense_step=1)
        run_dir = tmp / "run"
        train(config, run_dir, dataset=data, device=args.device, verbose=False)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        epochs, final = manifest["epochs"], manifest["final_epoch"]
        common = [*(["--data-root", args.data_root] if args.dataset == "mnist" else []), "--device", args.device,
                  "--threads", str(args.threads)]
        final_options = ["--families", args.final_families, "--fit-labels", "corrupted,true"]
        times = {"ours": [], "reference": []}
        for repeat in range(args.repeats):
            out = tmp / f"ours{repeat}"
            times["ours"].append(_run(["probe-run", "--run-dir", str(run_dir), "--out", str(out / "run.csv"),
                                       "--final-out", str(out / "final.csv"),
                                       "--final-families", args.final_families, "--final-fit-labels",
                                       "corrupted,true", *common]))
            ref = tmp / f"reference{repeat}"
            ref.mkdir()
            seconds = 0.0
            for epoch in epochs:
                h5, csv = ref / f"epoch{epoch}.h5", ref / f"epoch{epoch}.csv"
                seconds += _run(["activations", "--checkpoint", str(run_dir / "checkpoints" / f"epoch{epoch}.pt"),
                                 "--out", str(h5), *common])
                seconds += _run(["probe", "--activations", str(h5), "--out", str(csv), "--delete-activations",
                                 *(final_options if epoch == final else []), *common])
            seconds += _run(["concat", "--inputs", *(str(ref / f"epoch{e}.csv") for e in epochs),
                             "--out", str(ref / "run.csv")])
            times["reference"].append(seconds)
        identical = ((tmp / "ours0" / "run.csv").read_bytes() == (tmp / "reference0" / "run.csv").read_bytes()
                     and (tmp / "ours0" / "final.csv").read_bytes() == (tmp / f"reference0/epoch{final}.csv").read_bytes())
    ours, reference = statistics.median(times["ours"]), statistics.median(times["reference"])
    return {"dataset": args.dataset, "checkpoints": len(epochs), "train_images": config.train_subset,
            "device": args.device,
            "threads": args.threads, "ours_seconds": ours, "reference_seconds": reference,
            "ratio": reference / ours, "identical": identical}
