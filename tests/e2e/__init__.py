"""End-to-end tests: a real guest (QEMU, systemd, cloud-init) driven through the bivy CLI."""
