"""Decoding on the CPU: image files to uint8 RGB, audio files to float clips, and the DALI pipelines."""

from stoker.io.audio import AUDIO_EXTENSIONS, AudioDecodeError, check_audio, load_clip, read_audio
from stoker.io.image import IMAGE_EXTENSIONS, ImageDecodeError, check_image, decode_image_bytes, read_image

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "AudioDecodeError",
    "ImageDecodeError",
    "check_audio",
    "check_image",
    "decode_image_bytes",
    "load_clip",
    "read_audio",
    "read_image",
]
