"""``tabfm export MODEL --out FILE.onnx``: turn a saved estimator into one self-contained ONNX file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tabfm export``."""
    p = subparsers.add_parser(
        "export",
        help="export a saved estimator to ONNX",
        description="Export an estimator saved with est.save(DIR) to one ONNX file that "
        "tabfm.OnnxPredictor (or any onnxruntime client) runs without the training code.",
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="directory written by est.save(DIR)")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or later (default 17)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the check of the written file against torch with onnxruntime")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tabfm.errors import TabFMUserError
    from tabfm.onnx_export import export_estimator
    from tabfm.serialization import load_estimator

    try:
        estimator = load_estimator(args.model, device="cpu")
        path = export_estimator(estimator, args.out, opset=args.opset, verify=not args.no_verify)
    except (FileNotFoundError, TabFMUserError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("wrote %s (%s, %.2f MB)", path, type(estimator).__name__, path.stat().st_size / 1e6)
    return 0
