"""What the gateway and its client share: the signature scheme and the status codes."""
