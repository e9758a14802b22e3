"""The quality runs on real AudioSet (quality) and their committed results (results/)."""
