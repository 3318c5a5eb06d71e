"""One client object per memory block."""
