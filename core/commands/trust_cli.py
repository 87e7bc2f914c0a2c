"""``python -m core trust``: a trustworthy shortlist — scores with uncertainty, a feasibility checklist,
a ranking, and DFT-ready input sets for the best candidates.

    python -m core trust candidates.cif --relax --committee m3gnet,chgnet,sevennet --rank lcb \\
        --out trust.csv --dft-out dft_inputs --top 5
    python -m core trust --shortlist all --out shortlist_trust.csv

For each structure: relax (optional, with ``--mlip``), score (``core.scoring.pipeline``), E_hull by an MLIP
committee and ε_elec by the dielectric ensemble with ± (``core.scoring.uncertainty``), FoM ± propagated,
the checklist of ``core.scoring.feasibility``, then rank by FoM (``--rank mean``) or its lower confidence
bound FoM − k σ (``--rank lcb``). ``--dft-out`` writes MP input sets for the ``--top`` ranked candidates
(``core.dft_export``). The same in Python: ``core.scoring.assess.assess(structures, ...)``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pymatgen.core import Structure

from core.errors import InvalidInputError
from core.scoring.mlip import ACCURATE_MLIP


def _shortlist_structures(which: str) -> tuple[list[Structure], list[str]]:
    from core.shortlist import Shortlist

    store = Shortlist()
    ids = None if which == "all" else [int(x) for x in which.split(",") if x.strip()]
    entries = store.entries(ids)
    if not entries:
        raise InvalidInputError(f"no shortlist entries for {which!r} in {store.path}")
    return [e.structure for e in entries], [e.name for e in entries]


def run(args: argparse.Namespace) -> int:
    from core.dft_export import write_dft_inputs
    from core.export import read_files
    from core.scoring.assess import assess

    if args.rank not in ("mean", "lcb"):
        raise InvalidInputError(f"--rank {args.rank}: use mean or lcb")
    if not args.inputs and not args.shortlist:
        raise InvalidInputError("give structure files or --shortlist all / --shortlist 3,7")
    if args.inputs:
        records = read_files(args.inputs)
        structures, labels = [s for _, s in records], [label for label, _ in records]
    else:
        structures, labels = _shortlist_structures(args.shortlist)
    committee = None if args.committee.lower() == "none" else [m.strip() for m in args.committee.split(",") if m.strip()]

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    table, finals = assess(structures, mlip=args.mlip, relax=args.relax, hull=args.hull, committee=committee,
                           novelty=None if args.novelty == "none" else args.novelty, rank_by=args.rank, k=args.k,
                           ehull_max=args.ehull_max, gap_std_ev=args.gap_std, device=args.device, log=log)
    table.insert(1, "label", [labels[i] for i in table["input_index"]])
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            table.to_json(out, orient="records", indent=1)
        else:
            table.to_csv(out, index=False)
        log(f"wrote {len(table)} rows to {out}")
    else:
        table.to_csv(sys.stdout, index=False)
    if args.dft_out:
        top = table.head(args.top)
        items = [{"structure": finals[i], **{k: v for k, v in row.items() if k != "label"}}
                 for i, (_, row) in zip(top["input_index"], top.iterrows()) if isinstance(finals[i], Structure)]
        names = [f"{int(row['rank']):03d}_{row['formula']}" for _, row in top.iterrows()
                 if isinstance(finals[int(row["input_index"])], Structure)]
        summary = write_dft_inputs(items, args.dft_out, names=names)
        log(f"wrote DFT input sets for {len(items)} candidates: {summary}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trust", help="uncertainty (MLIP committee, ε ensemble), feasibility checklist, ranking, DFT inputs",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", help="structure files or folders (.cif, .extxyz, .json, POSCAR, .zip)")
    p.add_argument("--shortlist", default=None, help="use shortlist entries: all, or ids like 3,7")
    p.add_argument("--mlip", default=ACCURATE_MLIP,
                   help=f"MLIP for relaxation and the main score (default {ACCURATE_MLIP}, the most accurate here)")
    p.add_argument("--relax", action="store_true", help="relax with --mlip first (FIRE, fmax 0.1 eV/Å, ≤ 500 steps)")
    p.add_argument("--hull", default="bundled", help="hull reference: bundled, mp-api, or an entries JSON")
    p.add_argument("--committee", default="m3gnet,chgnet,sevennet", help="comma-separated MLIPs for E_hull ±, or none")
    p.add_argument("--novelty", default="none", help="novelty reference: training, a structure file, or none")
    p.add_argument("--rank", default="mean", help="mean (FoM) or lcb (FoM − k σ)")
    p.add_argument("--k", type=float, default=1.0, help="confidence-bound width in σ (default 1)")
    p.add_argument("--ehull-max", type=float, default=0.1, help="stability threshold, eV/atom (default 0.1)")
    p.add_argument("--gap-std", type=float, default=0.0, help="band-gap σ in eV for the FoM propagation (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", default=None, help="output .csv or .json (default: CSV on stdout)")
    p.add_argument("--dft-out", default=None, help="folder for MP VASP input sets of the top candidates")
    p.add_argument("--top", type=int, default=5, help="how many ranked candidates get DFT inputs (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
