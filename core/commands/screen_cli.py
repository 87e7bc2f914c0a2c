"""``python -m core screen``: sample and score many crystals on Ray (or in-process), resumable.

    python -m core screen --checkpoint checkpoints/base --spacegroups 1-230 --num 100000 \
        --mlip m3gnet --relax --hull bundled --out screens/big [--ray-address auto] [--workers 8]

Rerunning the same command resumes: finished batches are kept and only the others are computed.
Results: ``DIR/batches/*.parquet`` (read with ``core.screen.load_screen``) and ``DIR/summary.json``.
"""
from __future__ import annotations

import argparse
import os

from core.errors import InvalidInputError


def register(sub: argparse._SubParsersAction) -> None:
    from core.screen.spec import ScreenSpec

    d = ScreenSpec(checkpoint="")
    p = sub.add_parser("screen", help="large screen: sample and score many crystals on Ray, resumable",
                       description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("sampling")
    g.add_argument("--checkpoint", required=True, help="checkpoint folder (ours) or official .pkl / folder")
    g.add_argument("--config", default=None, help="model config JSON for official checkpoints (default: the paper's)")
    g.add_argument("--spacegroups", default=d.spacegroups, help="1-230, 225,221, 225, or 'train' (training distribution)")
    g.add_argument("--num", type=int, default=d.num, help="number of crystals")
    g.add_argument("--temperature", type=float, default=d.temperature)
    g.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling threshold (1 = off)")
    g.add_argument("--elements", default=None, help="allow-list, e.g. Cs,Li,F")
    g.add_argument("--exclude", default=None, help="deny-list, e.g. Pb,Cd,Hg")
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("scoring")
    g.add_argument("--mlip", default=d.mlip, help=f"interatomic potential (default {d.mlip})")
    g.add_argument("--relax", action="store_true", help="relax with the MLIP (FIRE, fmax 0.1 eV/Å, ≤ 500 steps)")
    g.add_argument("--hull", default=d.hull, help="hull reference: bundled, mp-api, an entries JSON, or none")
    g.add_argument("--no-properties", action="store_true", help="skip band gap, ε_elec and FoM")
    g.add_argument("--novelty", default=d.novelty,
                   help="novelty reference: training (the offline training structures), none, or a structure file")
    g.add_argument("--scorer", default=d.scorer, help="advanced: 'module:factory' replacing the scoring pipeline")
    g = p.add_argument_group("execution")
    g.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="crystals per batch (unit of work and of resuming)")
    g.add_argument("--workers", type=int, default=None,
                   help="Ray worker slots (default: all CPUs); with --no-ray: threads of this process")
    g.add_argument("--ray-address", default=None, help="a running Ray cluster ('auto'); default: start a local one")
    g.add_argument("--no-ray", action="store_true", help="run the batches in this process, one after another")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_screen)


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else ()


def cmd_screen(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {args.workers}")
    if args.no_ray and args.ray_address:
        raise InvalidInputError("--no-ray and --ray-address exclude each other")
    if args.no_ray and args.workers:
        from core.screen.executors import thread_env

        for key, value in thread_env(args.workers).items():  # before JAX / torch start their thread pools
            os.environ.setdefault(key, value)
    from core.screen import ScreenSpec, run_screen

    spec = ScreenSpec(checkpoint=args.checkpoint, spacegroups=args.spacegroups, num=args.num, batch_size=args.batch_size,
                      seed=args.seed, temperature=args.temperature, top_p=args.top_p, elements=_split(args.elements),
                      exclude=_split(args.exclude), config=args.config, mlip=args.mlip, relax=args.relax, hull=args.hull,
                      properties=not args.no_properties, novelty=args.novelty, scorer=args.scorer)
    result = run_screen(spec, args.out, use_ray=not args.no_ray, workers=args.workers, ray_address=args.ray_address,
                        progress=not args.quiet)
    if args.quiet and result.summary is not None:
        from core.screen import format_summary

        print(format_summary(result.summary))
    return 0 if result.complete else 1
