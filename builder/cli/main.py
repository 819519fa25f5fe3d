"""Entry point: parse, dispatch, and turn ImgbuildError into one message and an exit code.

Exit codes: 0 success, 1 operational failure (or a failed check), 2 invalid input, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM; the same cleanup as Ctrl-C). Tracebacks only with --debug.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from builder import __version__
from builder.cli import commands
from builder.cli.context import Context, default_out_dir, default_recipes_dir
from builder.cli.output import Output
from builder.errors import ImgbuildError, Terminated
from builder.secrets.redact import RedactingFilter, redact

DESCRIPTION = """\
imgbuild turns a short YAML recipe into a running, verified Debian virtual machine:
it renders a preseed and cloud-init seeds, builds ISOs and golden disk images, boots the VM
on the local QEMU target (or Proxmox VE) and verifies it over SSH and HTTP."""


EPILOG = """\
exit status: 0 success, 1 failure (or a failed check), 2 invalid recipe or arguments,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM: the same cleanup as Ctrl-C first).
One render, build, make or clone of a recipe at a time: OUT/NAME/.lock names the running one."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgbuild", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"imgbuild {__version__}")
    parser.add_argument("--recipes-dir", type=directory_arg, default=None, metavar="DIR",
                        help="where recipes are looked up by name (default: $IMGBUILD_RECIPES or ./recipes)")
    parser.add_argument("--out-dir", type=directory_arg, default=None, metavar="DIR",
                        help="build output root; each recipe writes to DIR/NAME/ (default: $IMGBUILD_OUT or ./out)")
    parser.add_argument("--debug", action="store_true", help="verbose logging and full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in commands.ALL:
        module.register(sub)
    return parser


def directory_arg(text: str) -> Path:
    """A directory option: never empty (``--out-dir ""`` would silently mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory, not be empty")
    return Path(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    if not args.debug:
        # paramiko logs every refused connection with a traceback while a guest boots; our own
        # messages say what matters.
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    ctx = Context(
        recipes_dir=args.recipes_dir or default_recipes_dir(),
        out_dir=args.out_dir or default_out_dir(),
        debug=args.debug,
        out=Output(as_json=getattr(args, "json", False)),
    )
    try:
        with terminated_on_sigterm():
            return int(args.func(ctx, args) or 0)
    except ImgbuildError as exc:
        if args.debug:  # the traceback, with secrets hidden like everywhere else
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(redact(f"imgbuild: error: {exc.message}"), file=sys.stderr)
        if exc.detail:
            for line in exc.detail.splitlines():
                print(redact(f"  {line}"), file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("imgbuild: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("imgbuild: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """While the command runs, SIGTERM raises Terminated (a KeyboardInterrupt): the cleanup Ctrl-C gets
    (VM destroyed, seed removed, child processes stopped, temporary files removed) runs on SIGTERM too.
    A second SIGTERM while that cleanup runs is ignored (SIGKILL still stops everything at once).
    The previous handler comes back afterwards (main() also runs inside tests)."""

    def cleaning_up(_signum: int, _frame: FrameType | None) -> None:
        print("imgbuild: SIGTERM again: still cleaning up (SIGKILL stops at once, leaving things behind)",
              file=sys.stderr)

    def terminate(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, cleaning_up)
        raise Terminated("terminated by SIGTERM")

    if threading.current_thread() is not threading.main_thread():  # signals cannot be handled here
        yield
        return
    # Read before it changes, restored in ``finally``: a SIGTERM right as the handler is set raises there.
    previous = signal.getsignal(signal.SIGTERM)
    unblocked_ctrl_c()
    try:
        signal.signal(signal.SIGTERM, terminate)
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def unblocked_ctrl_c() -> None:
    """A blocked SIGINT or SIGTERM inherited from whatever started imgbuild (exec keeps the signal mask)
    would make Ctrl-C and a service stop wait forever; a caller that wants them ignored sets SIG_IGN, which
    stays as it is."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _redacted_excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A bug's traceback is what helps; it is printed with secrets hidden like everything else."""
    print(redact("".join(traceback.format_exception(kind, value, tb))), file=sys.stderr, end="")


def run() -> None:
    sys.excepthook = _redacted_excepthook
    sys.exit(main())


if __name__ == "__main__":
    run()
