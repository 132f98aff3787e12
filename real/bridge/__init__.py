"""The hardware bridge: wire protocol, TCP transport, robot server and client, and their benchmark."""
