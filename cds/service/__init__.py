"""The CDS Hooks HTTP service: Flask app factory, discovery, hook calls, feedback, security."""
