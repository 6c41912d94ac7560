"""The ``emote`` command.

Each subcommand lives in its own ``register_*(subparsers)`` function, which adds the parser and sets
``func``; ``args.func(args)`` runs it and returns the exit code. Subcommands from other modules join
through the same hook: every module named in ``COMMAND_MODULES`` that is installed has its
``register(subparsers)`` called. A ``register`` must be cheap (argparse only): heavy imports belong
inside the command's function, so ``emote --help`` stays fast.

Flags are mapped explicitly onto the engine's settings dataclasses (``avatar_settings``,
``pipeline_settings``); the dataclasses check the values and raise ``ConfigError``.

Exit codes: 0 done; 2 a user error (``EmoteError``: printed as one line ``emote: error: ...``, no
traceback; argparse's usage errors also exit 2); 130 interrupted (Ctrl-C) or 143 terminated
(SIGTERM), with no partial output file left.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from emote.engine.expression import EMOTIONS, GAZE_MODES
from emote.engine.generator import DEFAULT_GENERATOR, available_generators

__all__ = ["main", "build_parser", "avatar_settings", "pipeline_settings", "add_steps_flag",
           "COMMAND_MODULES"]

PROG = "emote"
LANDMARKER_ENV = "EMOTE_LANDMARKER_MODEL"
NATIVE_LOGS_ENV = "EMOTE_NATIVE_LOGS"
# Modules that add subcommands through `register(subparsers)` (absent ones are skipped).
COMMAND_MODULES: tuple[str, ...] = ("emote.clients.serve_cmd",)

_DESCRIPTION = """\
emote: one photo + a voice -> a talking portrait, in real time on a plain CPU.

Lips in sync, head motion, blinks. Offline, `render` turns a portrait and an audio
file into an MP4 (H.264 + AAC)."""

_EPILOG = """\
examples:
  emote demo                                   # the embedded portrait says a sentence -> out/demo.mp4
  emote render me.jpg speech.wav -o me.mp4     # your photo, your audio (WAV, MP3, M4A, OGG, FLAC...)
  emote render me.jpg song.m4a -o me.mp4 --size 384 --seed 3
  emote prepare me.jpg                         # encode the portrait once; later renders start at once
  emote <command> --help                       # the flags of one command

environment:
  EMOTE_LANDMARKER_MODEL   face_landmarker.task to use instead of the packaged one
  EMOTE_CACHE_DIR          avatar cache directory (default ~/.cache/emote)
  EMOTE_NATIVE_LOGS=1      let MediaPipe / TF Lite print their native start-up logs

Errors print one line, `emote: error: <what is wrong and what to do>`, and exit with status 2."""


_Formatter = argparse.RawDescriptionHelpFormatter  # keeps the examples' line breaks


# --------------------------------------------------------------------------- flags -> settings


def _add_avatar_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=512, metavar="PX",
                   help="frame size in pixels: square, even, 64..4096 (default 512)")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="avatar cache directory (default: $EMOTE_CACHE_DIR or ~/.cache/emote)")
    p.add_argument("--landmarker-model", metavar="FILE", default=os.environ.get(LANDMARKER_ENV) or None,
                   help=f"MediaPipe face_landmarker.task to use (default: ${LANDMARKER_ENV}, "
                        "else the packaged model)")
    p.add_argument("--landmarks", metavar="FILE", default=None,
                   help="the face's 478 landmarks as .npy or .json ((x, y[, z]) pixels of IMAGE), for "
                        "portraits the landmarker cannot read (a last resort)")


def add_steps_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--steps, shared by `render`, `demo` and `serve` (PipelineSettings.steps checks it)."""
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion sampling steps per chunk of the backbone: 1 (fastest), 2 (default), "
                        "4 (smoothest); see `benchmarks/backbone.py` for the cost")


def _add_render_flags(p: argparse.ArgumentParser) -> None:
    _add_avatar_flags(p)
    p.add_argument("--fps", type=int, default=25, help="video frame rate: 20, 25, 30, 40 or 50 (default 25)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the motion; same audio and seed, same video (default 0)")
    p.add_argument("--generator", default=DEFAULT_GENERATOR, metavar="NAME",
                   help=f"motion generator: {', '.join(available_generators())} (default {DEFAULT_GENERATOR})")
    add_steps_flag(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is shown only when stderr is a terminal anyway)")
    g = p.add_argument_group("expression controls (the same as the live server's /ws controls)")
    g.add_argument("--emotion", default="neutral", choices=list(EMOTIONS),
                   help="emotion preset added to the speech motion (default neutral)")
    g.add_argument("--expression", type=float, default=1.0, metavar="X",
                   help="expression intensity 0..2: brows, smile, emotion strength (default 1)")
    g.add_argument("--head-speed", type=float, default=1.0, metavar="X",
                   help="head-motion speed 0..2 (default 1)")
    g.add_argument("--head-amplitude", type=float, default=1.0, metavar="X",
                   help="head-motion amplitude 0..2; 0 keeps the head still (default 1)")
    g.add_argument("--gaze", default="wander", choices=list(GAZE_MODES),
                   help="eyes wander (default) or look at the camera")
    g.add_argument("--blink-rate", type=float, default=None, metavar="PER_MIN",
                   help="blinks per minute 0..60 (default: the motion generator's own blinks)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=("mp4", "webm"), default=None,
                   help="mp4: H.264 + AAC; webm: VP9 + Opus with the person's alpha matte, for "
                        "overlays (default: from the output's suffix, else mp4)")
    o.add_argument("--background", metavar="COLOUR", default=None,
                   help="put the person over this colour, e.g. '#00ff00' for a chroma key "
                        "(the person's matte decides what is background)")


def avatar_settings(args: argparse.Namespace):
    """The flags of `prepare` -> AvatarSettings."""
    from emote.engine.avatar import AvatarSettings
    return AvatarSettings(size_px=args.size, landmarker_model=args.landmarker_model,
                          landmarks_file=args.landmarks, cache_dir=args.cache_dir)


def pipeline_settings(args: argparse.Namespace):
    """The flags of `render` / `demo` -> PipelineSettings."""
    from emote.engine.pipeline import PipelineSettings
    from emote.engine.expression import ExpressionSettings
    from emote.engine.matte import parse_colour
    fmt = getattr(args, "format", None)
    background = getattr(args, "background", None)
    return PipelineSettings(alpha=fmt == "webm" and background is None,
                            background_rgb=parse_colour(background) if background else None,
                            size_px=args.size, fps=args.fps, seed=args.seed, generator=args.generator,
                            steps=args.steps,
                            cache_dir=args.cache_dir, landmarker_model=args.landmarker_model,
                            landmarks_file=args.landmarks,
                            expression=ExpressionSettings(emotion=args.emotion, gaze=args.gaze,
                                                          blink_rate_per_min=args.blink_rate),
                            controls=(("expression_intensity", args.expression),
                                      ("head_motion_speed", args.head_speed),
                                      ("head_motion_amplitude", args.head_amplitude)))


# --------------------------------------------------------------------------- checks shared by commands


def _existing_file(path: str, what: str, error: type) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise error(f"{what} not found: {p}")
    if not p.is_file():
        raise error(f"{what} is not a file: {p}")
    return p


def _output_video(path: str, args: argparse.Namespace) -> Path:
    """The output path, checked against --format (set from the suffix when not given)."""
    from emote.engine.exceptions import ConfigError
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"the output {p} is a directory: give a file name such as {p / 'out.mp4'}")
    suffix = p.suffix.lower().lstrip(".")
    if args.format is None:
        if suffix not in ("mp4", "webm"):
            raise ConfigError(f"the output must be an .mp4 or .webm file, got {p}")
        args.format = suffix
    elif suffix != args.format:
        raise ConfigError(f"--format {args.format} writes a .{args.format} file, but the output is {p}: "
                          f"name it {p.with_suffix('.' + args.format)}")
    return p


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _print_notes(notes) -> None:
    for n in notes or ():
        print(f"{PROG}: note: {n}", file=sys.stderr)


@contextlib.contextmanager
def _native_stderr_aside() -> Iterator[None]:
    """Send what native libraries write to file descriptor 2 (MediaPipe's absl/glog and TF Lite start-up
    notes) to a temporary file, while Python's sys.stderr (errors, notes, the progress bar) still
    reaches the terminal. The aside is replayed if the command fails unexpectedly, so a bug report
    has it; EMOTE_NATIVE_LOGS=1 leaves fd 2 alone."""
    if os.environ.get(NATIVE_LOGS_ENV, "") not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded use)
        yield
        return
    aside = tempfile.TemporaryFile()
    old_stderr = sys.stderr
    os.dup2(aside.fileno(), 2)
    sys.stderr = open(saved, "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                      errors="backslashreplace", closefd=False)
    from emote.engine.exceptions import EmoteError
    try:
        yield
    except (EmoteError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        aside.seek(0)
        os.write(saved, aside.read())
        raise
    finally:
        sys.stderr.flush()
        sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)
        aside.close()


def _render(image: Path, audio: Path, out: Path, args: argparse.Namespace) -> int:
    from emote.engine.pipeline import render_file
    settings = pipeline_settings(args)
    with _native_stderr_aside():
        report = render_file(image, audio, out, settings=settings, progress=_show_progress(args))
    _print_notes(getattr(report, "notes", ()))
    speed = report.frames / max(report.seconds_elapsed, 1e-9)
    print(f"wrote {report.out_path}: {report.frames} frames, {report.duration_s:.2f} s of video "
          f"at {settings.size_px}x{settings.size_px}, rendered in {report.seconds_elapsed:.1f} s "
          f"({speed:.1f} frames/s, {report.duration_s / max(report.seconds_elapsed, 1e-9):.2f}x real time)")
    return 0


# --------------------------------------------------------------------------- commands


def cmd_prepare(args: argparse.Namespace) -> int:
    from emote.engine.avatar import default_cache_dir, prepare
    from emote.engine.exceptions import ImageError
    image = _existing_file(args.image, "image", ImageError)
    settings = avatar_settings(args)
    with _native_stderr_aside():
        avatar = prepare(image, settings)
    _print_notes(avatar.notes)
    where = Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()
    print(f"prepared {image}: {avatar.size_px}x{avatar.size_px} avatar, cached in {where}")
    return 0


def register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", formatter_class=_Formatter,
        help="encode a portrait once (face landmarks, head region) and cache it",
        description="Find the face, crop and encode the portrait, and cache the result on disk,\n"
                    "so that later `render` runs with the same image and --size start at once.",
        epilog="example:\n  emote prepare me.jpg --size 512")
    p.add_argument("image", metavar="IMAGE", help="portrait photo (JPEG, PNG, WebP...; one face, frontal works best)")
    _add_avatar_flags(p)
    p.set_defaults(func=cmd_prepare)


def cmd_render(args: argparse.Namespace) -> int:
    from emote.engine.exceptions import AudioError, ImageError
    image = _existing_file(args.image, "image", ImageError)
    audio = _existing_file(args.audio, "audio file", AudioError)
    return _render(image, audio, _output_video(args.output, args), args)


def register_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render", formatter_class=_Formatter,
        help="photo + audio file -> talking-portrait MP4 (or WebM with alpha)",
        description="Render a portrait speaking (or singing) an audio file: an MP4 with H.264 video\n"
                    "and the original audio re-encoded to AAC, as long as the audio; or a WebM\n"
                    "(VP9 + Opus) whose alpha channel cuts the person out, for overlays. The file\n"
                    "appears only when it is complete; on an error or Ctrl-C nothing is left.",
        epilog="examples:\n"
               "  emote render me.jpg speech.wav -o me.mp4\n"
               "  emote render me.png song.mp3 -o out/song.mp4 --size 384 --fps 30 --seed 7 --no-progress\n"
               "  emote render me.jpg speech.wav -o overlay.webm                   # transparent background\n"
               "  emote render me.jpg speech.wav -o key.mp4 --background '#00ff00'  # chroma key\n"
               "  emote render me.jpg speech.wav -o me.mp4 --emotion happy --gaze camera --blink-rate 15")
    p.add_argument("image", metavar="IMAGE", help="portrait photo (JPEG, PNG, WebP...)")
    p.add_argument("audio", metavar="AUDIO", help="voice or song (any format FFmpeg reads: WAV, MP3, M4A, OGG, FLAC...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the video to write: OUT.mp4, or OUT.webm (with alpha)")
    _add_render_flags(p)
    p.set_defaults(func=cmd_render)


def cmd_demo(args: argparse.Namespace) -> int:
    from emote.engine.resources import default_portrait_path, demo_speech_path
    return _render(default_portrait_path(), demo_speech_path(), _output_video(args.output, args), args)


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", formatter_class=_Formatter,
        help="render the embedded portrait saying a sentence",
        description="Render the embedded default portrait (a NASA astronaut photo, public domain)\n"
                    "with the embedded demo speech (about 6 s of English).",
        epilog="example:\n  emote demo -o out/demo.mp4")
    p.add_argument("-o", "--output", default=os.path.join("out", "demo.mp4"), metavar="OUT.mp4",
                   help="the video to write (default out/demo.mp4)")
    _add_render_flags(p)
    p.set_defaults(func=cmd_demo)


BUILTIN_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    register_render, register_demo, register_prepare)


# --------------------------------------------------------------------------- parser and main


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("emote")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for register in BUILTIN_COMMANDS:
        register(sub)
    for name in COMMAND_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(name).register(sub)
    return parser


class _Interrupts:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt and SIGTERM raises SystemExit(143) in the main thread, so
    writers unwind and remove their partial files.

    Python code that runs inside a C extension (a Cython error path, say) can swallow an exception raised
    there; so if the command still runs a second after the signal, the signal is sent again, and a
    command that completes after a swallowed signal still ends as interrupted."""

    RESEND_S = 1.0

    def __init__(self) -> None:
        self.signum: int | None = None
        self.done = threading.Event()
        self._old: dict[int, object] = {}

    def _exception(self) -> BaseException:
        return SystemExit(128 + signal.SIGTERM) if self.signum == signal.SIGTERM else KeyboardInterrupt()

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.done.is_set():
            return
        if self.signum is None:
            self.signum = signum
            threading.Thread(target=self._resend, name="emote-signal-resend", daemon=True).start()
        raise self._exception()

    def _resend(self) -> None:
        while not self.done.wait(self.RESEND_S):
            os.kill(os.getpid(), self.signum)

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.done.set()
        for s, h in self._old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if exc_type is None and self.signum is not None:
            raise self._exception()  # the signal was swallowed and the command completed
        return False


def _quiet_native_logs() -> None:
    # MediaPipe / TF Lite / OpenCV print chatter on stderr from C++ (start-up notes, decoder complaints
    # about a file the engine then rejects with a clear EmoteError); keep stderr for what matters.
    # Set before the engine imports them; a user's own setting wins.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "FATAL")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    _quiet_native_logs()
    from emote.engine.exceptions import EmoteError
    try:
        with _Interrupts():
            return int(func(args) or 0)
    except EmoteError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if e.code == 128 + signal.SIGTERM:
            print(f"{PROG}: terminated", file=sys.stderr)
        raise
    except BrokenPipeError:  # stdout closed early (e.g. `| head`)
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
