"""`emote serve` and `emote client`: argparse subcommands for the live server and Python client.

The main CLI calls ``register(subparsers)``; each subcommand sets ``func`` (``args.func(args)``
returns the exit code; user errors raise EmoteError, which the CLI prints on one line).
Standalone: ``python -m emote.clients.serve_cmd serve --portrait me.jpg``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from emote.clients.cli import add_steps_flag
from emote.engine.generator import DEFAULT_GENERATOR, available_generators

__all__ = ["register", "main", "WEB_DIR"]

WEB_DIR = str(Path(__file__).resolve().parent / "web")


def _portraits(paths: list[str]) -> tuple[tuple[str, str], ...]:
    """Image paths -> unique (name, path) pairs; the name is the file stem, other characters than
    letters, digits, '_' and '-' replaced by '-'."""
    from emote.engine.exceptions import ImageError
    out: list[tuple[str, str]] = []
    for p in paths:
        if not os.path.isfile(p):
            raise ImageError(f"portrait {p!r} does not exist")
        stem = re.sub(r"[^A-Za-z0-9_-]", "-", Path(p).stem)[:60] or "portrait"
        name, k = stem, 2
        while any(n == name for n, _ in out):
            name, k = f"{stem}-{k}", k + 1
        out.append((name, os.path.abspath(p)))
    return tuple(out)


def cmd_serve(args: argparse.Namespace) -> int:
    from emote.streaming.server import ServerSettings, run_server
    settings = ServerSettings(
        host=args.host, port=args.port, token=args.token or os.environ.get("EMOTE_TOKEN") or None,
        max_sessions=args.max_sessions, ice_servers=tuple(args.stun),
        ice_addresses=tuple(args.ice_address), portraits=_portraits(args.portrait),
        web_dir=WEB_DIR, size_px=args.size, generator=args.generator, steps=args.steps, cache_dir=args.cache_dir,
        margin_ms=args.margin_ms, packet_ms=args.packet_ms, seed=args.seed, cors_origins=tuple(args.cors_origin))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_server(settings)
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from emote.clients.client import run_cli
    return run_cli(args.url, args.audio, args.mic, args.out, args.token or os.environ.get("EMOTE_TOKEN"),
                   args.portrait, args.seconds, tuple(args.ice_address))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` and `client` to an argparse subparsers object."""
    s = subparsers.add_parser("serve", help="live WebRTC server: a voice in, the talking portrait out",
                              description="Serve the call page (/), the OBS overlay (/overlay), "
                                          "WebRTC signaling (/offer), control (/ws) and /metrics.")
    s.add_argument("--portrait", action="append", default=[], metavar="IMAGE",
                   help="portrait image (repeat for several; the first is the default; "
                        "none: the embedded default portrait)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--token", help="access token required by every route, pages included: open "
                                   "/?token=TOKEN (or set EMOTE_TOKEN)")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages of this other site call the API, e.g. https://studio.example.org "
                        "(default: none; cross-origin requests get 403)")
    s.add_argument("--max-sessions", type=int, default=4)
    s.add_argument("--stun", action="append", default=[], metavar="URL",
                   help="STUN server for peers behind NAT, e.g. stun:stun.example.org:3478 "
                        "(default: none, host candidates only)")
    s.add_argument("--ice-address", action="append", default=[], metavar="IP",
                   help="offer only these local addresses as ICE candidates (e.g. 127.0.0.1 "
                        "for a browser on the same machine)")
    s.add_argument("--size", type=int, default=512, help="video size in pixels (square)")
    s.add_argument("--generator", default=DEFAULT_GENERATOR,
                   help=f"motion generator: {', '.join(available_generators())} (default {DEFAULT_GENERATOR})")
    add_steps_flag(s)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cache-dir", help="avatar cache directory")
    s.add_argument("--margin-ms", type=float, default=50.0,
                   help="the engine's time budget for a window, from the arrival of the audio packet "
                        "that completes it; added to the output delay (default 50)")
    s.add_argument("--packet-ms", type=float, default=20.0,
                   help="the peers' audio packet length; windows are phased to end on packet "
                        "boundaries (default 20, WebRTC's Opus default; 0: no phasing)")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=cmd_serve)

    c = subparsers.add_parser("client", help="stream a file or the microphone to a server, record the reply",
                              description="Connect to an emote server, send audio, record the "
                                          "returned video and voice to an MP4.")
    c.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", metavar="FILE", help="audio file to send (any format PyAV reads)")
    src.add_argument("--mic", action="store_true", help="send the default microphone (sounddevice)")
    c.add_argument("--out", metavar="MP4", help="write what comes back to this MP4 (H.264 + AAC)")
    c.add_argument("--token", help="access token (or EMOTE_TOKEN)")
    c.add_argument("--portrait", help="portrait name on the server (default: the server's first)")
    c.add_argument("--seconds", type=float, help="stay connected this long (default: the file + 1.5 s; mic: 30)")
    c.add_argument("--ice-address", action="append", default=[], metavar="IP",
                   help="offer only these local addresses as ICE candidates (127.0.0.1 for a local server)")
    c.set_defaults(func=cmd_client)


def main(argv: list[str] | None = None) -> int:
    from emote.engine.exceptions import EmoteError
    parser = argparse.ArgumentParser(prog="emote")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EmoteError as e:
        print(f"emote: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
