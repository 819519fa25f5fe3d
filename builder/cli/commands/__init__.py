"""One module per subcommand; each has register(subparsers) and run(ctx, args)."""

from builder.cli.commands import list_cmd, render_cmd, show_cmd, validate_cmd

ALL = [list_cmd, show_cmd, validate_cmd, render_cmd]
