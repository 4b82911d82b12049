"""The daemon and what runs it: wiring, signals, systemd notification, metrics, the demo."""
