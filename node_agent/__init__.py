"""The agent on every board: profiles, trains with its planned schedule, uploads updates."""
