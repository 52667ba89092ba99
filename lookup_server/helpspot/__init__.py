"""HelpSpot's wire format: its calls decoded, the XML it reads rendered, the PHP bridge."""
