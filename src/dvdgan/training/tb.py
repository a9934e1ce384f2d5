"""TensorBoard helpers: animated sample videos without moviepy (a GIF in an image summary)."""

from __future__ import annotations

from tensorboard.compat.proto.summary_pb2 import Summary

from dvdgan.video_io import gif_bytes


def add_gif(writer, tag: str, video, step: int, fps: float = 8.0) -> None:
    """Log uint8 [T, H, W, 3] as an animated image TensorBoard plays in its Images tab."""
    if writer is None:
        return
    t, h, w, c = video.shape
    img = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(video, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), step)
