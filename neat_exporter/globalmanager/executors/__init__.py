"""How VMs move: one Executor per cloud API (dry_run, libvirt, nova)."""
