"""Read models and operator actions behind the CLI: tickets, letters, customers, health, explain."""
