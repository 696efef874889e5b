"""What the tests share: servers, processes, clients, data and settings."""
