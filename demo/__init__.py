"""The one-command demo of continuous authorization."""
