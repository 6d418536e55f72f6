"""The domain of start-run and track-progress: plain Python, talks to the outside only through
its ports (`logic.ports`)."""
