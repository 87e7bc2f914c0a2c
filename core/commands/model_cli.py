"""``python -m core sample | logp | export``: the generative model from the command line.

    python -m core sample --checkpoint checkpoints/base --spacegroup 225 --num 100 --temperature 1.0 \
        --elements Cs,Li,F --out samples.extxyz          (or a .json file, or a folder for CIFs)
    python -m core logp --checkpoint CK [--config CONFIG.json] INPUT... [--json]
    python -m core export --checkpoint CK --official out/epoch_000000.pkl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from core.errors import InvalidInputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate crystals by space group",
                       description="Generate crystals with a CrystalFormer checkpoint.")
    _checkpoint_args(p)
    p.add_argument("--spacegroup", default="225",
                   help="space group(s): 225, 221,225, 1-230, or 'train' for the training distribution")
    p.add_argument("--num", type=int, default=10, help="number of crystals")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1 = off)")
    p.add_argument("--elements", default=None, help="allow-list, e.g. Cs,Li,F")
    p.add_argument("--exclude", default=None, help="deny-list, e.g. Pb,Cd,Hg")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="crystals decoded at once (memory)")
    p.add_argument("--reject-overlaps", action="store_true",
                   help="overlap-aware sampling: redraw crystals with two atoms closer than --overlap-fraction x the "
                        "sum of their covalent radii (at least --overlap-floor Å); ones that never fit are flagged")
    p.add_argument("--overlap-fraction", type=float, default=None, help="default 0.7 (with --reject-overlaps)")
    p.add_argument("--overlap-floor", type=float, default=None, help="Å, default 0.7 (with --reject-overlaps)")
    p.add_argument("--out", default=None,
                   help="samples.extxyz | samples.json | a folder (one CIF per crystal); default: print token strings")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("logp", help="log-likelihood of crystals under a checkpoint",
                       description="Log-likelihood (nats) of crystals, total and per part (w, a, xyz, l).")
    _checkpoint_args(p)
    p.add_argument("inputs", nargs="+", help="CIF files / folders, extxyz, or .npz of token arrays (G, L, XYZ, A, W)")
    p.add_argument("--json", action="store_true", help="one JSON object per crystal")
    p.set_defaults(func=cmd_logp)

    p = sub.add_parser("export", help="write a checkpoint in the official CrystalFormer pickle format")
    _checkpoint_args(p)
    p.add_argument("--official", required=True, help="output .pkl path")
    p.set_defaults(func=cmd_export)


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (ours) or official .pkl / folder")
    p.add_argument("--config", default=None, help="model config JSON for official checkpoints (default: the paper's)")


def _load(args):
    from core.checkpoint import load_checkpoint

    return load_checkpoint(args.checkpoint, args.config)


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def cmd_sample(args) -> int:
    from core.sampler import acceptance, parse_spacegroups, sample
    from core.tokens import atomic_number

    spacegroup = args.spacegroup
    if spacegroup.strip().lower() != "train":
        spacegroup = parse_spacegroups(spacegroup)  # bad input fails before the model loads
    for symbol in (_split(args.elements) or []) + (_split(args.exclude) or []):
        atomic_number(symbol)
    reject = _overlap_rule(args)
    ck = _load(args)
    samples = sample(ck, spacegroup, args.num, temperature=args.temperature, top_p=args.top_p,
                     elements=_split(args.elements), exclude=_split(args.exclude), seed=args.seed,
                     batch_size=args.batch_size, reject_overlaps=reject,
                     progress=lambda done, total: print(f"sampled {done}/{total}", file=sys.stderr))
    rate = acceptance(samples)
    if rate is not None:
        print(f"overlap-aware: {rate['fit']}/{rate['samples']} fit ({rate['first_draw']} as first drawn), "
              f"{rate['flagged']} flagged", file=sys.stderr)
    ok = [s for s in samples if s.structure is not None]
    if args.out:
        write_samples(samples, Path(args.out))
        print(f"wrote {len(ok)} structures to {args.out} ({len(samples) - len(ok)} could not be built)", file=sys.stderr)
    else:
        for s in samples:
            note = s.error or (f"overlap: {s.overlap}" if s.fits is False else None)
            print(f"{s.string}\tlogp={s.logp:.3f}" + (f"\t# {note}" if note else ""))
    return 0


def _overlap_rule(args):
    """False, or the ``OverlapRule`` the --reject-overlaps flags ask for (bad numbers fail before loading)."""
    from core.overlap import OverlapRule

    if not args.reject_overlaps:
        if args.overlap_fraction is not None or args.overlap_floor is not None:
            raise InvalidInputError("--overlap-fraction / --overlap-floor need --reject-overlaps")
        return False
    defaults = OverlapRule()
    try:
        return OverlapRule(defaults.fraction if args.overlap_fraction is None else args.overlap_fraction,
                           defaults.floor if args.overlap_floor is None else args.overlap_floor)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def write_samples(samples, out: Path) -> None:
    """extxyz (valid structures, with info), JSON (all samples), or a folder of CIFs."""
    suffix = out.suffix.lower()
    if suffix in (".extxyz", ".xyz"):
        from ase.io import write
        from pymatgen.io.ase import AseAtomsAdaptor

        frames = []
        for i, s in enumerate(samples):
            if s.structure is None:
                continue
            atoms = AseAtomsAdaptor.get_atoms(s.structure)
            atoms.info.update(index=i, spacegroup=s.spacegroup, tokens=s.string, logp=s.logp)
            if s.fits is not None:      # overlap-aware sampling: flagged crystals are written, marked
                atoms.info.update(fits=bool(s.fits), min_distance=float(s.min_distance))
            frames.append(atoms)
        out.parent.mkdir(parents=True, exist_ok=True)
        write(out, frames, format="extxyz")
    elif suffix == ".json":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([{"index": i, "spacegroup": s.spacegroup, "tokens": s.string, "logp": s.logp,
                                    "logp_parts": s.logp_parts, "formula": s.formula, "error": s.error,
                                    "fits": s.fits, "min_distance": s.min_distance, "overlap": s.overlap,
                                    "structure": s.structure.as_dict() if s.structure is not None else None}
                                   for i, s in enumerate(samples)], indent=1))
    elif suffix == "":
        out.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(samples):
            if s.structure is not None:
                s.structure.to(filename=str(out / f"{i:05d}_{s.formula}_sg{s.spacegroup}.cif"))
    else:
        raise InvalidInputError(f"--out must end in .extxyz or .json, or be a folder; got {out}")


def cmd_logp(args) -> int:
    from core.logp import batched_logp
    from core.tokens import CrystalTokens

    ck = _load(args)
    n_max = ck.config.n_max
    rows: list[tuple[str, dict]] = []  # (label, arrays of one crystal) in input order
    failures: list[str] = []
    for name in args.inputs:
        path = Path(name)
        if path.suffix == ".npz":
            rows += [(f"{path}[{i}]", r) for i, r in enumerate(_npz_rows(path))]
            continue
        from core.export import read_paths

        for i, structure in enumerate(read_paths([path])):
            label = f"{path}[{i}]" if path.suffix in (".extxyz", ".xyz", ".json") or path.is_dir() else str(path)
            try:
                rows.append((label, CrystalTokens.from_structure(structure).to_arrays(n_max)))
            except InvalidInputError as exc:
                failures.append(f"{label}: {exc}")
    if not rows:
        raise InvalidInputError("no crystal to evaluate" + (f" ({'; '.join(failures)})" if failures else ""))
    arrays = {k: np.stack([np.asarray(r[k]) for _, r in rows]) for k in ("G", "L", "XYZ", "A", "W")}
    if arrays["W"].shape[1] != n_max:
        raise InvalidInputError(f"token arrays have {arrays['W'].shape[1]} sites; this model uses n_max = {n_max}")
    lp = batched_logp(ck.config, ck.params, arrays["G"], arrays["L"], arrays["XYZ"], arrays["A"], arrays["W"])
    for i, (label, _) in enumerate(rows):
        record = {"input": label, "spacegroup": int(arrays["G"][i]), "logp": float(lp.total[i]),
                  "logp_w": float(lp.w[i]), "logp_a": float(lp.a[i]), "logp_xyz": float(lp.xyz[i]), "logp_l": float(lp.l[i])}
        if args.json:
            print(json.dumps(record))
        else:
            print(f"{label}\tlogp={record['logp']:.4f}\tw={record['logp_w']:.4f}\ta={record['logp_a']:.4f}"
                  f"\txyz={record['logp_xyz']:.4f}\tl={record['logp_l']:.4f}")
    for f in failures:
        print(f"skipped {f}", file=sys.stderr)
    return 0


def _npz_rows(path: Path) -> list[dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("G", "L", "XYZ", "A", "W") if k not in z.files]
            if missing:
                raise InvalidInputError(f"{path} lacks token arrays {missing} (expected G, L, XYZ, A, W as in the fixtures' inputs.npz)")
            data = {k: np.asarray(z[k]) for k in ("G", "L", "XYZ", "A", "W")}
    except FileNotFoundError:
        from core.errors import MissingResourceError

        raise MissingResourceError(f"input file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not a readable .npz of token arrays ({exc})") from None
    return [{k: data[k][i] for k in data} for i in range(len(data["G"]))]


def cmd_export(args) -> int:
    from core.checkpoint import export_official

    ck = _load(args)
    path = export_official(args.official, ck.config, ck.params)
    print(f"wrote {path} (official CrystalFormer format; load it there with the hyperparameters in {args.checkpoint})")
    return 0
