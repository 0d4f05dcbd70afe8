"""Real-host test harness: light sshd hosts and booted nspawn hosts."""
