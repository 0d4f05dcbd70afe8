"""The defaults every command shares (ping, run, audit, apply; RunOptions and ApplyOptions): one
place, so the CLI, the executor and the engine cannot disagree. No imports: the CLI reads it at
start-up."""

FORKS = 64  # hosts at once: a 50-host lab runs in one wave (Ansible's default is 5)
CONNECT_TIMEOUT = 10.0  # seconds for TCP connect, SSH banner and authentication, each
COMMAND_TIMEOUT = 120.0  # seconds per remote command
PING_COMMAND_TIMEOUT = 10.0  # ping runs `true`: a hung host is reported in seconds, not minutes
