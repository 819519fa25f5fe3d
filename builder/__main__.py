from builder.cli.main import run

run()
