"""Run a command and report its peak resident memory, measured honestly.

    python -S tests/iso/peak_rss.py OUTFILE COMMAND [ARGS...]

Linux keeps a process's RSS high-water mark across exec, and a child forked (or vforked) from a big
parent such as pytest starts with the parent's pages counted. So the command is started from this
small launcher (run with -S: a few MB), and the child's ru_maxrss from wait4 is written to OUTFILE in
bytes. The exit status is passed through.
"""

import os
import sys


def main() -> int:
    out, cmd = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _pid, status, usage = os.wait4(pid, 0)
    with open(out, "w") as fh:
        fh.write(str(usage.ru_maxrss * 1024))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
