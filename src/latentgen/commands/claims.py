"""Evaluate the two papers' quantitative claims on the built results (claims.csv).

One row per claim (per model–dataset pair where the claim is made per model): claim_id, scope,
paper, section, the claim, the measured value, the criterion, the verdict (holds / does not hold /
not evaluable) and the evidence. A claim whose inputs are not given is "not evaluable", naming
them. Writes --out and a provenance sidecar (--out with .json). The claims and their criteria:
latentgen.paper.claims.CLAIMS.
"""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from latentgen.paper.claims import Inputs, evaluate, write_claims
    from latentgen.provenance import build_record, write_sidecar

    try:
        config = None if args.config_json is None else json.loads(args.config_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config-json is not valid JSON: {exc}") from None
    inputs = Inputs.load(probes=args.probes, train_logs=args.train_logs, relabel=args.relabel, metrics=args.metrics)
    frame = evaluate(inputs)
    write_claims(frame, args.out)
    if not args.no_provenance:
        record = build_record(inputs=[*args.probes, *args.train_logs, *args.relabel, *args.metrics],
                              outputs=[args.out], config=config,
                              extra={"verdicts": frame["verdict"].value_counts().to_dict()})
        write_sidecar(args.out, record)
    counts = ", ".join(f"{n} {v}" for v, n in frame["verdict"].value_counts().items())
    print(f"claims: {len(frame)} rows ({counts}) -> {args.out}")
    return 0
