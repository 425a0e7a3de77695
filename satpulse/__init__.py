"""satpulse: real-time customer-satisfaction pipeline."""
