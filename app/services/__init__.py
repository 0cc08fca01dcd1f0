"""Plain-async services (no Qt): accounts, keys, the local registry, workspaces, costs, tunnels."""
