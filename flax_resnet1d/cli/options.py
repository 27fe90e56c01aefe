"""Options several commands share: ``--config`` (constructor arguments) and ``--key``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import config_from_dict, parse_json, read_json
from ..errors import ConfigError, UsageError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="JSON",
                        help="constructor arguments as JSON text or a .json file, with 'arch' (the MDNC class; "
                             "default EncoderNet1d); checked against the weights (default: inferred from them; "
                             "needed for what they do not hold: a DecoderNet1d's out_size, a block's stride, padding "
                             "and output_size)")


def add_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", help="entry of a PyTorch training checkpoint dict holding the state dict "
                                      "(default: the one entry that is a state dict of an MDNC 1D network, of "
                                      "--config's architecture if given)")


def parse_config(text: str) -> Any:
    """``--config``: the family config of JSON text, or of the path of a JSON file (a Flax
    checkpoint's config.json works); its ``arch`` field names the architecture (absent: EncoderNet1d).
    Checked at the edge (``config.parse_json``): encoding, size, depth, then every field."""
    if text.lstrip().startswith("{"):
        fields = parse_json(text, "--config")
    else:
        path = Path(text)
        if not path.exists():
            raise UsageError(f"--config {text}: neither JSON text nor an existing .json file")
        fields = read_json(path, "--config")
    try:
        return config_from_dict(fields)
    except ConfigError as e:
        raise ConfigError(f"--config: {e}") from None
