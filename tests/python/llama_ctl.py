#!/usr/bin/env python3
"""(Re)start a real llama-server in the background, as an operator's restart command would.

    python llama_ctl.py restart STATE_DIR PORT LIFETIME_S -- LLAMA_SERVER ARGS...

`restart` stops the server recorded in STATE_DIR/server.pid (SIGKILL to its whole process group:
router children included; a stopped process dies too), waits until none of that group is left and
the port can be bound again, then starts `LLAMA_SERVER ARGS...` in a new session with its output
appended to STATE_DIR/server.log, records its process group in STATE_DIR/server.pid and exits 0
without waiting for the server to be ready (the caller polls it). The server runs under
`timeout -s KILL LIFETIME_S`, so a test that dies without cleaning up leaves nothing running for
long. LLAMA_CACHE is STATE_DIR/cache (empty), so router mode lists only its --models-dir.

homeostat runs restart commands with a cleared environment and captures their output: this script
needs no environment variable and keeps the server's output away from its own.

Exit status: 0 started; 1 the old server would not die or the port stayed busy; 2 bad usage.
"""

import os
import signal
import socket
import subprocess
import sys
import time

WAIT_S = 10.0


def group_alive(pgid):
    """Whether a process of group `pgid` is still alive (zombies do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait(condition):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def restart(state_dir, port, lifetime, argv):
    pid_file = os.path.join(state_dir, "server.pid")
    try:
        with open(pid_file) as f:
            old = int(f.read().strip())
    except (OSError, ValueError):
        old = None
    if old is not None:
        try:
            os.killpg(old, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not wait(lambda: not group_alive(old)):
            print(f"llama_ctl: process group {old} is still alive", file=sys.stderr)
            return 1
    if not wait(lambda: port_free(port)):
        print(f"llama_ctl: port {port} stays busy", file=sys.stderr)
        return 1
    cache = os.path.join(state_dir, "cache")
    os.makedirs(cache, exist_ok=True)
    env = {"LLAMA_CACHE": cache, "PATH": "/usr/bin:/bin"}
    with open(os.path.join(state_dir, "server.log"), "ab") as log:
        server = subprocess.Popen(
            ["timeout", "-s", "KILL", str(lifetime)] + argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{server.pid}\n")
    os.replace(pid_file + ".tmp", pid_file)
    print(f"llama_ctl: started process group {server.pid} on port {port}")
    return 0


def main(argv):
    if len(argv) < 6 or argv[0] != "restart" or argv[4] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    state_dir, port, lifetime = argv[1], int(argv[2]), int(argv[3])
    return restart(state_dir, port, lifetime, argv[5:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
