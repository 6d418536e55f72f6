"""The start-run domain: plain Python, talks to the outside only through its ports."""
