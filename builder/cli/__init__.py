"""The imgbuild command line: a thin parser that dispatches to one module per subcommand."""
