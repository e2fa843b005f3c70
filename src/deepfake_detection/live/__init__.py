"""Real-time detection on video: threaded capture, IoU tracking, temporal smoothing, overlay, and
video-level verdicts for `dfd detect clip.mp4`. Each module is small and usable on its own."""
