"""One module per subcommand; each has register(subparsers) and run(ctx, args)."""

from builder.cli.commands import (
    build_cmd,
    cache_cmd,
    clone_cmd,
    destroy_cmd,
    diff_cmd,
    doctor_cmd,
    hostnet_cmd,
    lab_cmd,
    list_cmd,
    make_cmd,
    release_cmd,
    render_cmd,
    report_cmd,
    show_cmd,
    status_cmd,
    template_cmd,
    validate_cmd,
    verify_cmd,
)

ALL = [list_cmd, show_cmd, validate_cmd, render_cmd, build_cmd, make_cmd, verify_cmd, destroy_cmd, template_cmd, release_cmd,
       clone_cmd, status_cmd, diff_cmd, report_cmd, cache_cmd, hostnet_cmd, lab_cmd, doctor_cmd]
