"""HelpSpot's own Web Service API: a client, and a target that writes survey results back."""
